//! The config as a whole: embedded defaults, file and environment
//! together, errors naming the key, the printed (redacted) form.

use std::time::Duration;

use super::*;

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

#[test]
fn embedded_defaults_match_the_spec() {
    let c = Config::load(None, no_env()).expect("defaults load");
    assert_eq!(c.domain, "localhost");
    assert_eq!(
        c.db_path(),
        PathBuf::from("./backchannel-data/backchannel.db")
    );
    assert_eq!(c.smtp.listen.to_string(), "127.0.0.1:2525");
    assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.imap.listen.to_string(), "127.0.0.1:1143");
    assert_eq!(
        c.http.metrics_listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9090")
    );
    assert_eq!(c.outbound.mode, OutboundMode::Maildir);
    assert_eq!(c.smtp.max_message_bytes, 26_214_400);
    assert_eq!(c.smtp.max_connections, 512);
    assert_eq!(c.outbound.retry_schedule.len(), 5);
    assert_eq!(c.outbound.max_age, Duration::from_secs(3 * 86400));
    assert_eq!(c.portal.max_upload_bytes, 10 * 1024 * 1024);
    assert_eq!(c.portal.replies_per_hour, 20);
    assert_eq!(c.webhooks.timeout, Duration::from_secs(10));
    assert_eq!(
        c.webhooks.retry_schedule,
        [10, 60, 300, 1800, 7200, 21600].map(Duration::from_secs)
    );
    assert_eq!(c.webhooks.max_age, Duration::from_secs(86400));
    assert_eq!((c.webhooks.concurrency, c.webhooks.per_endpoint), (8, 2));
}

#[test]
fn env_overrides_win_over_the_file() {
    let c = Config::from_toml_str(
        "domain = \"gw.example.com\"\n[smtp]\nlisten = \"127.0.0.1:2526\"\n",
        vec![
            (
                "BACKCHANNEL_SMTP_LISTEN".to_string(),
                "0.0.0.0:25".to_string(),
            ),
            (
                "BACKCHANNEL_SMTP_MAX_CONNECTIONS".to_string(),
                "7".to_string(),
            ),
            (
                "BACKCHANNEL_OUTBOUND_RETRY_SCHEDULE".to_string(),
                "1s, 2s".to_string(),
            ),
            ("BACKCHANNEL_DATA_DIR".to_string(), "/tmp/x".to_string()),
            ("BACKCHANNEL_CONFIG".to_string(), "ignored".to_string()),
            ("UNRELATED".to_string(), "1".to_string()),
        ],
    )
    .expect("loads");
    assert_eq!(c.domain, "gw.example.com");
    assert_eq!(c.smtp.listen.to_string(), "0.0.0.0:25");
    assert_eq!(c.smtp.max_connections, 7);
    assert_eq!(
        c.outbound.retry_schedule,
        vec![Duration::from_secs(1), Duration::from_secs(2)]
    );
    assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
}

#[test]
fn the_metrics_listener_is_an_address_or_off() {
    let on = |env: &str| {
        Config::load(
            None,
            vec![("BACKCHANNEL_HTTP_METRICS_LISTEN".to_string(), env.into())],
        )
        .expect("loads")
        .http
        .metrics_listen
    };
    assert_eq!(
        on("127.0.0.1:0"),
        Some("127.0.0.1:0".parse().expect("addr"))
    );
    assert_eq!(on(""), None, "empty turns it off");
    let c = Config::from_toml_str("[http]\nmetrics_listen = \"\"\n", no_env()).expect("loads");
    assert_eq!(c.http.metrics_listen, None);
    assert!(c.to_redacted_toml().contains("metrics_listen = \"\""));
}

/// (TOML text, environment, key the error must name)
type ErrorCase = (&'static str, Vec<(String, String)>, &'static str);

#[test]
fn errors_name_the_key() {
    let cases: &[ErrorCase] = &[
        ("[smtp]\nlisten = \"nope\"\n", no_env(), "smtp.listen"),
        ("[smtp]\nbogus = 1\n", no_env(), "smtp.bogus"),
        ("bogus = 1\n", no_env(), "bogus"),
        (
            "[smtp]\nmax_connections = \"many\"\n",
            no_env(),
            "smtp.max_connections",
        ),
        (
            "[outbound]\nmode = \"carrier-pigeon\"\n",
            no_env(),
            "outbound.mode",
        ),
        (
            "[outbound]\nmode = \"relay\"\n",
            no_env(),
            "outbound.relay_url",
        ),
        (
            "[outbound]\nretry_schedule = [\"1 fortnight\"]\n",
            no_env(),
            "outbound.retry_schedule",
        ),
        (
            "[outbound]\nspf = [\"ip4:nope\"]\n",
            no_env(),
            "outbound.spf",
        ),
        ("[smtp]\ntls_cert = \"a.pem\"\n", no_env(), "smtp.tls_key"),
        (
            "[webhooks]\ntimeout = \"0s\"\n",
            no_env(),
            "webhooks.timeout",
        ),
        (
            "[webhooks]\nretry_schedule = []\n",
            no_env(),
            "webhooks.retry_schedule",
        ),
        (
            "[webhooks]\nretry_schedule = [\"soon\"]\n",
            no_env(),
            "webhooks.retry_schedule",
        ),
        (
            "[webhooks]\nmax_age = \"forever\"\n",
            no_env(),
            "webhooks.max_age",
        ),
        (
            "[webhooks]\nper_endpoint = 0\n",
            no_env(),
            "webhooks.per_endpoint",
        ),
        (
            "",
            vec![("BACKCHANNEL_WEBHOOKS_CONCURRENCY".into(), "0".into())],
            "webhooks.concurrency",
        ),
        ("domain = \"not a domain\"\n", no_env(), "domain"),
        ("[log]\nformat = \"xml\"\n", no_env(), "log.format"),
        ("smtp = 3\n", no_env(), "smtp"),
        (
            "[portal]\nreplies_per_hour = 0\n",
            no_env(),
            "portal.replies_per_hour",
        ),
        (
            "",
            vec![("BACKCHANNEL_PORTAL_MAX_UPLOAD_BYTES".into(), "big".into())],
            "portal.max_upload_bytes",
        ),
        (
            "[outbound]\nmode = \"relay\"\nrelay_url = \"http://relay.example\"\n",
            no_env(),
            "outbound.relay_url",
        ),
        (
            "[outbound]\nrelay_url = \"smtp://relay.example?tls=yes\"\n",
            no_env(),
            "outbound.relay_url",
        ),
        ("[outbound]\nmx_port = 0\n", no_env(), "outbound.mx_port"),
        (
            "[outbound]\nmx_port = 70000\n",
            no_env(),
            "outbound.mx_port",
        ),
        (
            "[outbound]\nper_host_concurrency = 0\n",
            no_env(),
            "outbound.per_host_concurrency",
        ),
        (
            "[outbound]\nsend_timeout = \"0s\"\n",
            no_env(),
            "outbound.send_timeout",
        ),
        (
            "",
            vec![("BACKCHANNEL_SMTP_MAX_CONNECTIONS".into(), "lots".into())],
            "smtp.max_connections",
        ),
        (
            "",
            vec![("BACKCHANNEL_SMTP_NOPE".into(), "1".into())],
            "BACKCHANNEL_SMTP_NOPE",
        ),
        (
            "[limits]\nexempt = [\"10.0.0.0/40\"]\n",
            no_env(),
            "limits.exempt",
        ),
        (
            "",
            vec![("BACKCHANNEL_LIMITS_EXEMPT".into(), "localhost".into())],
            "limits.exempt",
        ),
        (
            "[limits]\nlogin_failures = 0\n",
            no_env(),
            "limits.login_failures",
        ),
        (
            "[limits]\nlogin_window = \"0s\"\n",
            no_env(),
            "limits.login_window",
        ),
        (
            "[smtp]\nmax_rcpt_failures = 0\n",
            no_env(),
            "smtp.max_rcpt_failures",
        ),
        (
            "[smtp]\ntarpit_delay = \"5m\"\n",
            no_env(),
            "smtp.tarpit_delay",
        ),
        (
            "",
            vec![(
                "BACKCHANNEL_SMTP_CONNECTIONS_PER_MINUTE_PER_IP".into(),
                "0".into(),
            )],
            "smtp.connections_per_minute_per_ip",
        ),
        (
            "[smtp]\nblock_time = \"a while\"\n",
            no_env(),
            "smtp.block_time",
        ),
        (
            "[smtp]\ntls_handshake_timeout = \"0s\"\n",
            no_env(),
            "smtp.tls_handshake_timeout",
        ),
        (
            "[imap]\nmax_line_bytes = 0\n",
            no_env(),
            "imap.max_line_bytes",
        ),
        (
            "",
            vec![("BACKCHANNEL_IMAP_MAX_LINE_BYTES".into(), "big".into())],
            "imap.max_line_bytes",
        ),
        (
            "[imap]\nmax_literal_bytes = 10\n",
            no_env(),
            "imap.max_literal_bytes",
        ),
        (
            "[imap]\nmax_line_bytes = 8192\nmax_literal_bytes = 65536\n",
            no_env(),
            "imap.max_literal_bytes",
        ),
        (
            "[imap]\nmax_literal_bytes = 5000000000\nmax_line_bytes = 6000000000\n",
            no_env(),
            "imap.max_l",
        ),
        (
            "[imap]\nshutdown_grace = \"soon\"\n",
            no_env(),
            "imap.shutdown_grace",
        ),
        (
            "[imap]\npreauth_timeout = \"0s\"\n",
            no_env(),
            "imap.preauth_timeout",
        ),
        (
            "[http]\nmetrics_listen = \"9090\"\n",
            no_env(),
            "http.metrics_listen",
        ),
        (
            "[imap]\npreauth_max_time = \"0s\"\n",
            no_env(),
            "imap.preauth_max_time",
        ),
        (
            "[imap]\nmax_connections_per_ip = 0\n",
            no_env(),
            "imap.max_connections_per_ip",
        ),
        (
            "",
            vec![("BACKCHANNEL_HTTP_MAX_CONNECTIONS_PER_IP".into(), "0".into())],
            "http.max_connections_per_ip",
        ),
        (
            "[imap]\ntls_handshake_timeout = \"0s\"\n",
            no_env(),
            "imap.tls_handshake_timeout",
        ),
        (
            "[imap]\nlogin_failure_delay = \"2m\"\n",
            no_env(),
            "imap.login_failure_delay",
        ),
        (
            "[imap]\nmax_bad_commands = 0\n",
            no_env(),
            "imap.max_bad_commands",
        ),
        (
            "[jmap]\nmax_calls_in_request = 0\n",
            no_env(),
            "jmap.max_calls_in_request",
        ),
        (
            "[jmap]\nmax_calls_in_request = \"many\"\n",
            no_env(),
            "jmap.max_calls_in_request",
        ),
        (
            "",
            vec![("BACKCHANNEL_JMAP_MAX_CHANGES".into(), "lots".into())],
            "jmap.max_changes",
        ),
        (
            "[jmap]\nmax_size_request = 10\n",
            no_env(),
            "jmap.max_size_request",
        ),
        (
            "[jmap]\nmax_objects_in_get = 0\n",
            no_env(),
            "jmap.max_objects_in_get",
        ),
        (
            "[jmap]\nmax_objects_in_set = 0\n",
            no_env(),
            "jmap.max_objects_in_set",
        ),
        (
            "[jmap]\nmax_concurrent_requests = 0\n",
            no_env(),
            "jmap.max_concurrent_requests",
        ),
        (
            "[jmap]\nmax_push_streams = 0\n",
            no_env(),
            "jmap.max_push_streams",
        ),
        (
            "[jmap]\nmax_properties = 0\n",
            no_env(),
            "jmap.max_properties",
        ),
        (
            "[jmap]\nmax_filter_conditions = 1000\n",
            no_env(),
            "jmap.max_filter_conditions",
        ),
        (
            "[jmap]\nmax_filter_depth = 0\n",
            no_env(),
            "jmap.max_filter_depth",
        ),
        (
            "[jmap]\nmax_filter_depth = 65\n",
            no_env(),
            "jmap.max_filter_depth",
        ),
        (
            "[jmap]\nmax_query_results = 0\n",
            no_env(),
            "jmap.max_query_results",
        ),
        ("[jmap]\nbogus = 1\n", no_env(), "jmap.bogus"),
        (
            "[webhooks]\nallow_destinations = [\"10.0.0.0/33\"]\n",
            no_env(),
            "webhooks.allow_destinations",
        ),
        (
            "",
            vec![(
                "BACKCHANNEL_OUTBOUND_ALLOW_DESTINATIONS".into(),
                "127.0.0.0/8, not a host".into(),
            )],
            "outbound.allow_destinations",
        ),
    ];
    for (text, env, key) in cases {
        let err = Config::from_toml_str(text, env.clone())
            .err()
            .unwrap_or_else(|| panic!("{text:?} should fail"));
        let msg = err.to_string();
        assert!(
            msg.contains(key),
            "error for {text:?} should name {key}: {msg}"
        );
    }
}

#[test]
fn printed_config_redacts_the_relay_password() {
    let c = Config::from_toml_str(
        "[outbound]\nmode = \"relay\"\nrelay_url = \"smtp://bob:hunter2@relay.example:587\"\n",
        no_env(),
    )
    .expect("loads");
    let printed = c.to_redacted_toml();
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(
        printed.contains("smtp://bob:***@relay.example:587"),
        "{printed}"
    );
    assert!(!format!("{c:?}").contains("hunter2"));
    // The printed form loads back to the same effective values.
    let again = Config::from_toml_str(&printed, no_env()).expect("round trip");
    assert_eq!(again.outbound.mode, OutboundMode::Relay);
}

#[test]
fn outbound_delivery_keys_have_defaults() {
    let c = Config::load(None, no_env()).expect("defaults load");
    assert_eq!(c.outbound.mx_port, 25);
    assert_eq!(c.outbound.per_host_concurrency, 4);
    assert_eq!(c.outbound.send_timeout, Duration::from_secs(120));
    assert!(c.outbound.relay.is_none());
}

#[test]
fn abuse_limits_have_defaults_and_env_overrides() {
    let c = Config::load(None, no_env()).expect("defaults load");
    assert_eq!(c.smtp.connections_per_minute_per_ip, 120);
    assert_eq!(c.smtp.rcpt_failures_before_tarpit, 3);
    assert_eq!(c.smtp.tarpit_delay, Duration::from_secs(1));
    assert_eq!(c.smtp.max_rcpt_failures, 20);
    assert_eq!(c.smtp.rcpt_failure_window, Duration::from_secs(3600));
    assert_eq!(c.smtp.block_time, Duration::from_secs(1800));
    assert_eq!(c.limits.login_failures, 10);
    assert_eq!(c.limits.login_window, Duration::from_secs(900));
    assert_eq!(c.limits.max_tracked_ips, 65_536);
    assert!(c.limits.exempt.contains("127.0.0.1".parse().expect("ip")));
    assert!(c.limits.exempt.contains("::1".parse().expect("ip")));
    assert!(!c.limits.exempt.contains("192.0.2.1".parse().expect("ip")));
    let c = Config::load(
        None,
        vec![
            ("BACKCHANNEL_LIMITS_EXEMPT".into(), "".into()),
            ("BACKCHANNEL_LIMITS_LOGIN_FAILURES".into(), "3".into()),
            ("BACKCHANNEL_SMTP_MAX_RCPT_FAILURES".into(), "5".into()),
            ("BACKCHANNEL_SMTP_TARPIT_DELAY".into(), "250ms".into()),
        ],
    )
    .expect("loads");
    assert!(!c.limits.exempt.contains("127.0.0.1".parse().expect("ip")));
    assert_eq!(c.limits.login_failures, 3);
    assert_eq!(c.smtp.max_rcpt_failures, 5);
    assert_eq!(c.smtp.tarpit_delay, Duration::from_millis(250));
}

#[test]
fn imap_and_jmap_limits_have_defaults_and_env_overrides() {
    let c = Config::load(None, no_env()).expect("defaults load");
    let i = &c.imap;
    assert_eq!(
        (i.max_line_bytes, i.max_literal_bytes),
        (256 * 1024, 64 * 1024)
    );
    assert_eq!(i.shutdown_grace, Duration::from_secs(10));
    assert_eq!(i.preauth_timeout, Duration::from_secs(60));
    assert_eq!(i.preauth_max_time, Duration::from_secs(120));
    assert_eq!(i.max_connections_per_ip, 16);
    assert_eq!(c.http.max_connections_per_ip, 64);
    assert_eq!(i.tls_handshake_timeout, Duration::from_secs(30));
    assert_eq!(i.login_failure_delay, Duration::from_secs(1));
    assert_eq!(i.max_bad_commands, 50);
    assert_eq!(
        c.jmap,
        JmapConfig {
            max_size_request: 40 * 1024 * 1024,
            max_calls_in_request: 32,
            max_objects_in_get: 500,
            max_objects_in_set: 500,
            max_concurrent_requests: 4,
            max_push_streams: 4,
            max_properties: 128,
            max_filter_conditions: 256,
            max_filter_depth: 16,
            max_changes: 5000,
            max_query_results: 1000,
        }
    );
    let c = Config::from_toml_str(
        "[http]\nmax_body_bytes = 65536\n[jmap]\nmax_objects_in_get = 7\n",
        vec![
            ("BACKCHANNEL_JMAP_MAX_CALLS_IN_REQUEST".into(), "2".into()),
            ("BACKCHANNEL_IMAP_MAX_LINE_BYTES".into(), "8192".into()),
            ("BACKCHANNEL_IMAP_MAX_LITERAL_BYTES".into(), "4096".into()),
            ("BACKCHANNEL_IMAP_SHUTDOWN_GRACE".into(), "250ms".into()),
            ("BACKCHANNEL_IMAP_PREAUTH_MAX_TIME".into(), "30s".into()),
            ("BACKCHANNEL_IMAP_MAX_CONNECTIONS_PER_IP".into(), "3".into()),
            ("BACKCHANNEL_HTTP_MAX_CONNECTIONS_PER_IP".into(), "5".into()),
        ],
    )
    .expect("loads");
    assert_eq!(c.jmap.max_calls_in_request, 2);
    assert_eq!(c.jmap.max_objects_in_get, 7);
    // A JMAP request is never larger than the HTTP layer lets through.
    assert_eq!(c.jmap.max_size_request, 65536);
    assert_eq!(
        (c.imap.max_line_bytes, c.imap.max_literal_bytes),
        (8192, 4096)
    );
    assert_eq!(c.imap.shutdown_grace, Duration::from_millis(250));
    assert_eq!(c.imap.preauth_max_time, Duration::from_secs(30));
    assert_eq!(
        (c.imap.max_connections_per_ip, c.http.max_connections_per_ip),
        (3, 5)
    );
    let printed = c.to_redacted_toml();
    assert!(printed.contains("[jmap]"), "{printed}");
    assert!(printed.contains("max_calls_in_request = 2"), "{printed}");
    assert!(printed.contains("max_line_bytes = 8192"), "{printed}");
    assert!(printed.contains("preauth_max_time = \"30s\""), "{printed}");
}

#[test]
fn allow_destinations_default_empty_and_come_from_file_or_env() {
    let c = Config::load(None, no_env()).expect("defaults load");
    assert!(c.webhooks.allow_destinations.is_empty());
    assert!(c.outbound.allow_destinations.is_empty());
    let c = Config::from_toml_str(
        "[webhooks]\nallow_destinations = [\"127.0.0.0/8\", \"hooks.corp.example\"]\n",
        vec![(
            "BACKCHANNEL_OUTBOUND_ALLOW_DESTINATIONS".into(),
            "10.0.0.0/8, mx.corp.example".into(),
        )],
    )
    .expect("loads");
    let ip = |s: &str| s.parse().expect("ip");
    assert!(c.webhooks.allow_destinations.allows_ip(ip("127.0.0.1")));
    assert!(
        c.webhooks
            .allow_destinations
            .allows_name("hooks.corp.example")
    );
    assert!(!c.webhooks.allow_destinations.allows_ip(ip("10.0.0.1")));
    assert!(c.outbound.allow_destinations.allows_ip(ip("10.1.2.3")));
    assert!(c.outbound.allow_destinations.allows_name("mx.corp.example"));
    let printed = c.to_redacted_toml();
    assert!(printed.contains("\"127.0.0.0/8\""), "{printed}");
    assert!(printed.contains("\"mx.corp.example\""), "{printed}");
    let again = Config::from_toml_str(&printed, no_env()).expect("round trip");
    assert!(
        again
            .outbound
            .allow_destinations
            .allows_name("mx.corp.example")
    );
}

#[test]
fn a_syntax_error_names_the_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "domain = \"gw.example.com\"\n[smtp]\nlisten = 127.0.0.1:25\n",
    )
    .expect("write");
    let err = Config::load(Some(&path), no_env()).expect_err("a syntax error");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("at line 3, column 15:"), "{msg}");

    let err = Config::from_toml_str("[smtp\n", no_env()).expect_err("a syntax error");
    assert_eq!(
        err.to_string(),
        "config file <string> is not valid TOML at line 1, column 6: unclosed table, expected `]`"
    );
}

#[test]
fn positions_count_lines_and_characters_from_one() {
    let cases: &[(&str, usize, (usize, usize))] = &[
        ("", 0, (1, 1)),
        ("abc", 2, (1, 3)),
        ("a\nbc", 3, (2, 2)),
        ("a\n", 2, (2, 1)),
        // Columns count characters, not bytes: `é` is two bytes.
        ("é = x", 5, (1, 5)),
        // An offset past the end is the end.
        ("a\nb", 99, (2, 2)),
    ];
    for (text, offset, (line, column)) in cases {
        assert_eq!(
            Position::of(text, *offset),
            Position {
                line: *line,
                column: *column
            },
            "{text:?} at {offset}"
        );
    }
}

#[test]
fn submission_has_defaults_env_overrides_and_can_be_turned_off() {
    let c = Config::load(None, no_env()).expect("defaults load");
    let s = &c.submission;
    assert_eq!(
        s.listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:1587")
    );
    assert_eq!(s.max_message_bytes, c.smtp.max_message_bytes);
    assert_eq!(s.max_recipients, 50);
    assert!(s.tls.is_none());
    let off = Config::load(
        None,
        vec![("BACKCHANNEL_SUBMISSION_LISTEN".to_string(), String::new())],
    )
    .expect("loads");
    assert_eq!(off.submission.listen, None, "empty turns it off");
    let c = Config::from_toml_str(
        "[smtp]\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n[submission]\nlisten = \"127.0.0.1:0\"\nmax_recipients = 3\n",
        vec![(
            "BACKCHANNEL_SUBMISSION_MAX_MESSAGE_BYTES".to_string(),
            "2048".to_string(),
        )],
    )
    .expect("loads");
    assert_eq!(c.submission.max_recipients, 3);
    assert_eq!(c.submission.max_message_bytes, 2048);
    let tls = c
        .submission
        .tls
        .as_ref()
        .expect("the [smtp] files by default");
    assert_eq!(tls.cert, PathBuf::from("/c.pem"));
    let own = Config::from_toml_str(
        "[smtp]\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n[submission]\ntls_cert = \"/s.pem\"\ntls_key = \"/sk.pem\"\n",
        no_env(),
    )
    .expect("loads");
    let tls = own.submission.tls.as_ref().expect("its own files");
    assert_eq!(tls.key, PathBuf::from("/sk.pem"));
    assert!(c.to_redacted_toml().contains("[submission]"));

    let cases: &[(&str, &str)] = &[
        ("[submission]\nlisten_on = \"x\"\n", "submission.listen_on"),
        ("[submission]\nlisten = \"nowhere\"\n", "submission.listen"),
        (
            "[submission]\nmax_recipients = 0\n",
            "submission.max_recipients",
        ),
        (
            "[submission]\nmax_message_bytes = 10\n",
            "submission.max_message_bytes",
        ),
        (
            "[submission]\ntls_cert = \"/c.pem\"\n",
            "submission.tls_key",
        ),
        (
            "[submission]\nauth_failure_delay = \"5m\"\n",
            "submission.auth_failure_delay",
        ),
        (
            "[submission]\ncommand_timeout = \"0s\"\n",
            "submission.command_timeout",
        ),
    ];
    for (text, key) in cases {
        let e = Config::from_toml_str(text, no_env())
            .expect_err(text)
            .to_string();
        assert!(e.contains(key), "{text}: {e}");
    }
    let e = Config::load(
        None,
        vec![("BACKCHANNEL_SUBMISSION_NOPE".to_string(), "1".to_string())],
    )
    .expect_err("unknown env")
    .to_string();
    assert!(e.contains("BACKCHANNEL_SUBMISSION_NOPE"), "{e}");
}

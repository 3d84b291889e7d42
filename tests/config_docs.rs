//! `docs/configuration.md` documents exactly the keys the gateway knows:
//! every key `backchannel config` prints (the embedded defaults) is in the
//! document's TOML reference, in the same section, and the reference names
//! no key the gateway would refuse.

use std::collections::BTreeSet;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_backchannel");

/// `section.key` for every key of a TOML table (top-level keys bare).
fn keys(table: &toml::Table) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (name, value) in table {
        match value {
            toml::Value::Table(section) => {
                out.extend(section.keys().map(|k| format!("{name}.{k}")));
            }
            _ => {
                out.insert(name.clone());
            }
        }
    }
    out
}

#[test]
fn every_key_the_gateway_knows_is_documented_and_no_other() {
    // The defaults, as an operator sees them: the binary with no config
    // file and none of the test's own BACKCHANNEL_* variables.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("BACKCHANNEL_") {
            c.env_remove(k);
        }
    }
    let out = c
        .arg("config")
        .current_dir(dir.path())
        .output()
        .expect("run config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: toml::Table = String::from_utf8_lossy(&out.stdout)
        .parse()
        .expect("config prints TOML");

    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let start = doc.find("```toml\n").expect("a ```toml block") + "```toml\n".len();
    let end = start + doc[start..].find("```").expect("the block's end");
    let documented: toml::Table = doc[start..end]
        .parse()
        .expect("the reference is valid TOML");

    let (known, listed) = (keys(&printed), keys(&documented));
    let undocumented: Vec<_> = known.difference(&listed).collect();
    let unknown: Vec<_> = listed.difference(&known).collect();
    assert!(
        undocumented.is_empty(),
        "keys missing from docs/configuration.md: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "docs/configuration.md names keys the gateway does not know: {unknown:?}"
    );
    assert!(
        known.len() > 100,
        "the defaults list every key ({} found)",
        known.len()
    );

    // And the reference itself loads as a config (the gateway accepts
    // every key and value it shows).
    let path = dir.path().join("reference.toml");
    std::fs::write(&path, &doc[start..end]).expect("write");
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("BACKCHANNEL_") {
            c.env_remove(k);
        }
    }
    let out = c
        .arg("--config")
        .arg(&path)
        .arg("config")
        .output()
        .expect("run config");
    assert!(
        out.status.success(),
        "the reference does not load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

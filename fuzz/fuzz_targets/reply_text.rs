//! Visible-reply extraction (src/reply_text.rs): the input, decoded
//! leniently as UTF-8, through the plain-text and HTML extractors and the
//! HTML → text conversion. Checks: no panic, no runaway time (libFuzzer's
//! -timeout; the extractors face regex-backtracking traps in real mail), and
//! the visible reply of a text is never longer than the text it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let visible = backchannel::reply_text::visible_text(&text);
    assert!(
        visible.len() <= text.len(),
        "visible reply longer than the body: {} > {}",
        visible.len(),
        text.len()
    );
    let _ = backchannel::reply_text::visible_html(&text);
    let _ = backchannel::reply_text::html_to_text(&text);
});

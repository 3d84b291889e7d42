//! Unit tests of the visible-reply extractor.

use super::html::{attr, has_class};
use super::*;

#[test]
fn plain_text_table() {
    let cases: &[(&str, &str, &str)] = &[
        ("empty", "", ""),
        ("only whitespace", " \n\t\n", ""),
        ("no quote", "Hello there.\n\nBye", "Hello there.\n\nBye"),
        (
            "gmail top post",
            "Hello\n\nOn Mon, Apr 2, 2012 at 6:26 PM, Megan One <x@gmail.com> wrote:\n\n> Hi\n",
            "Hello",
        ),
        (
            "attribution split over two lines",
            "Yes\n\nOn Tue, Sep 25, 2012 at 8:59 AM, Chris W\n<n@github.com> wrote:\n\n> old\n",
            "Yes",
        ),
        (
            "attribution split over three lines",
            "Ok\n\nOn Dec 16, 2011, at 12:47 PM, Corey\n<r@x.com>\nwrote:\n\n> q\n",
            "Ok",
        ),
        ("CRLF normalised", "a\r\nb\r\n\r\n> q\r\n", "a\nb"),
        ("CR-only normalised", "a\rb\r", "a\nb"),
        (
            "french",
            "Merci\n\nLe lun. 2 avr. 2012 à 14:20, Jean <j@x.fr> a écrit :\n> Salut\n",
            "Merci",
        ),
        (
            "german with name after verb",
            "Danke\n\nAm 02.04.2012 um 14:20 schrieb Max Muster <m@x.de>:\n\n> Hallo\n",
            "Danke",
        ),
        (
            "spanish",
            "Gracias\n\nEl lun., 2 abr. 2012 a las 14:20, Juan (<j@x.es>) escribió:\n\n> Hola\n",
            "Gracias",
        ),
        (
            "attribution over unquoted history cuts",
            "Fine\n\nOn Mon, 2 Apr 2012, Bob <b@x.com> wrote:\nold text without markers\n",
            "Fine",
        ),
        (
            "outlook original message",
            "Sure\n\n-----Original Message-----\nFrom: a\nSent: b\n\nold",
            "Sure",
        ),
        (
            "zimbra original message",
            "Sure\n\n----- Original Message -----\nFrom: a\nold",
            "Sure",
        ),
        (
            "outlook underscore separator",
            "Done\n\n________________________________\nFrom: Bob <b@x.com>\nSent: Monday\nold",
            "Done",
        ),
        (
            "outlook header block",
            "Hi\n\nFrom: Bob [mailto:b@x.com]\nSent: Monday, April 2\nTo: Me\nSubject: Test\n\nold",
            "Hi",
        ),
        (
            "bold header block after dash rule",
            "Hi\n\n ------------\n\n*From:* Bob\n*Sent:* Monday\n*To:* me\n*Subject:* x\n\nold",
            "Hi",
        ),
        (
            "german outlook header block",
            "Hallo\n\nVon: Bob\nGesendet: Montag\nAn: Ich\nBetreff: Test\n\nalt",
            "Hallo",
        ),
        (
            "itinerary is not a header block",
            "Booked:\nFrom: Berlin\nTo: Paris\nDate: 3 May",
            "Booked:\nFrom: Berlin\nTo: Paris\nDate: 3 May",
        ),
        (
            "inline replies keep vendor lines",
            "On Tue, Apr 29, 2014 at 4:22 PM, Dev <d@x.com> wrote:\n\n> q1\n>\n\nanswer 1\n\n> q2\n\nanswer 2\n\n> tail\n",
            "answer 1\n\nanswer 2",
        ),
        (
            "bottom post",
            "On 04/02/2012 06:26 PM, Megan wrote:\n> Hi \nHello",
            "Hello",
        ),
        ("signature delimiter", "Thanks\n-- \nJohn\nAcme", "Thanks"),
        (
            "signature delimiter without space",
            "Thanks\n--\nJohn",
            "Thanks",
        ),
        (
            "double dash inside a line is text",
            "fix -- not a sig\nbye",
            "fix -- not a sig\nbye",
        ),
        (
            "dash list items are not a delimiter",
            "Prizes:\n-- FOUR gift cards\n-- EIGHT mugs",
            "Prizes:\n-- FOUR gift cards\n-- EIGHT mugs",
        ),
        ("iphone", "Here\n\nSent from my iPhone", "Here"),
        (
            "sent from my iphone above a quote",
            "Hello\n\nSent from my iPhone\n\nOn Apr 3, 2012, at 4:19 PM, bob <b@x.com> wrote:\n\n> Hi",
            "Hello",
        ),
        (
            "get outlook",
            "Ok\n\nGet Outlook for iOS<https://aka.ms/o0ukef>",
            "Ok",
        ),
        (
            "mail for windows",
            "Ok\n\nSent from Mail for Windows 10",
            "Ok",
        ),
        ("yahoo", "Ok\n\nSent from Yahoo Mail on Android", "Ok"),
        ("german mobile", "Ok\n\nVon meinem iPhone gesendet", "Ok"),
        (
            "dash name sign-off",
            "Question?\n\n-Abhishek Kona\n\n",
            "Question?",
        ),
        (
            "dash list item kept",
            "Todo:\n\n- Buy milk",
            "Todo:\n\n- Buy milk",
        ),
        (
            "mailing list footer",
            "Text\n\n_______________________________________________\nfoo mailing list\nfoo@x.org",
            "Text",
        ),
        (
            "greedy on is not an attribution",
            "On your remote host you can run:\n\n  telnet 127.0.0.1 52698\n\nOk",
            "On your remote host you can run:\n\n  telnet 127.0.0.1 52698\n\nOk",
        ),
        (
            "as i wrote is not a cut without a quote",
            "As I wrote:\nthe answer is 42",
            "As I wrote:\nthe answer is 42",
        ),
        (
            "vendor line above attribution survives",
            "See you at the meeting\nOn Mon, 2 Apr 2012, Bob <b@x.com> wrote:\n> q",
            "See you at the meeting",
        ),
        (
            "forward is kept",
            "FYI\n\n---------- Forwarded message ---------\nFrom: A <a@x.com>\nDate: Mon\nSubject: S\nTo: B\n\nBody",
            "FYI\n\n---------- Forwarded message ---------\nFrom: A <a@x.com>\nDate: Mon\nSubject: S\nTo: B\n\nBody",
        ),
        (
            "apple forward is kept with its quote",
            "See below\n\nBegin forwarded message:\n\n> From: A\n> Subject: S",
            "See below\n\nBegin forwarded message:\n\n> From: A\n> Subject: S",
        ),
        (
            "whole message quoted falls back to the original",
            "> only a quote\n> here\n-- \nsig",
            "> only a quote\n> here",
        ),
        ("only a signature falls back to it", "-- \nJohn", "--\nJohn"),
        (
            "russian android attribution",
            "Hello\n02.04.2012 14:20 пользователь \"b@x.org\" <\nb@x.org> написал:\n\n> Hi\n>\n",
            "Hello",
        ),
        (
            "yahoo classic dashes before attribution",
            "Hi\n\n--- On Wed, 4/4/12, x@example.com <x@example.com> wrote:\n\nFrom: x\nSubject: s\n",
            "Hi",
        ),
        ("bom stripped", "\u{feff}Hi\n> q", "Hi"),
        (
            "footer-like prose is kept",
            "Sent from my office in Berlin\nThe parts ship Monday.",
            "Sent from my office in Berlin\nThe parts ship Monday.",
        ),
        (
            "a bare footer is still a reply",
            "Sent from my iPhone",
            "Sent from my iPhone",
        ),
        (
            "footer above an outlook mobile separator",
            "Yes\n\nGet Outlook for Android<https://aka.ms/ghei36>\n________________________________\nFrom: Bob <b@x.com>\nSent: Monday\nTo: me\nSubject: x\n\nold",
            "Yes",
        ),
        (
            "french outlook header block",
            "Oui\n\nDe : Jean <j@x.fr>\nEnvoyé : lundi 2 avril 2012 14:20\nÀ : Moi\nObjet : Test\n\nancien",
            "Oui",
        ),
        (
            "spanish outlook header block",
            "Sí\n\nDe: Juan <j@x.es>\nEnviado: lunes\nPara: Yo\nAsunto: Test\n\nviejo",
            "Sí",
        ),
        (
            "french gmail attribution wrapped before the verb",
            "Merci\n\nLe lun. 2 avr. 2012 à 14:20, Jean Dupont <jean@x.fr> a\nécrit :\n\n> Salut\n",
            "Merci",
        ),
        (
            "german gmail attribution",
            "Danke\n\nAm Mo., 2. Apr. 2012 um 14:20 Uhr schrieb Max <m@x.de>:\n\n> Hallo\n",
            "Danke",
        ),
        (
            "a sentence starting with sent from my is not a footer",
            "Here it is\n\nSent from my desk, which beats my phone.",
            "Here it is\n\nSent from my desk, which beats my phone.",
        ),
        (
            "delimiter after a mid-line double dash",
            "a correct -- signature follows.\n\n-- \nrick",
            "a correct -- signature follows.",
        ),
        (
            "outlook separator right under the reply",
            "Reply directly above\n________________________________________\nFrom: CRM [crm@x.com]\nSent: Friday, 23 March 2012 5:08 p.m.\nTo: John\nSubject: [contact:106] John\n\nA comment.",
            "Reply directly above",
        ),
        (
            "indented bullets survive, bold signature after quote goes",
            "first\n\n   - bullet one\n   - bullet two\n\n\nOn Fri, Feb 24, 2012 at 10:19 AM, <ex@x.com> wrote:\n\n> quoted\n\n\n-- \n\n*Joe | Director*",
            "first\n\n   - bullet one\n   - bullet two",
        ),
        (
            "header block without separator, signature in the history",
            "And another reply!\n\nFrom: Dan [mailto:d@x.com]\nSent: Monday, November 26, 2012 10:48 AM\nTo: W\nSubject: Re: New Issue\n\nA reply\n\n--\nIdeas",
            "And another reply!",
        ),
        (
            "top post with dash sign-off and quoted mailing-list footer",
            "Oh thanks.\n\nHaving it would be great.\n\n-Abhishek Kona\n\nOn 01/03/11 7:07 PM, Russell Brown wrote:\n> q\n> _______________________________________________\n> list mailing list\n\n_______________________________________________\nriak-users mailing list\n",
            "Oh thanks.\n\nHaving it would be great.",
        ),
        (
            "thunderbird german",
            "Ja\n\nAm 02.04.2012 14:20, schrieb Max Muster:\n> alt\n",
            "Ja",
        ),
        (
            "dutch gmail",
            "Ja\n\nOp ma 2 apr. 2012 om 14:20 schreef Jan <j@x.nl>:\n\n> oud\n",
            "Ja",
        ),
        (
            "dutch apple mail",
            "Ja\n\nOp 2 apr. 2012 om 14:20 heeft Jan <j@x.nl> het volgende geschreven:\n\n> oud\n",
            "Ja",
        ),
        (
            "italian",
            "Sì\n\nIl giorno lun 2 apr 2012 alle ore 14:20 Mario <m@x.it> ha scritto:\n\n> vecchio\n",
            "Sì",
        ),
        (
            "portuguese",
            "Sim\n\nEm seg., 2 de abr. de 2012 às 14:20, João <j@x.pt> escreveu:\n\n> velho\n",
            "Sim",
        ),
        (
            "chinese",
            "好的\n\n在 2012年4月2日，Taro <t@x.cn> 写道：\n\n> 旧\n",
            "好的",
        ),
        (
            "a sentence starting with a number is not joined as an attribution",
            "3 people came\nthey wrote:\nnot a quote",
            "3 people came\nthey wrote:\nnot a quote",
        ),
        (
            "nbsp lines are blank",
            "Hi\n\u{a0}\nJoe\n\n--- On Wed, 4/4/12, a@b.c wrote:\n\nold",
            "Hi\n\nJoe",
        ),
    ];
    for (name, input, want) in cases {
        assert_eq!(visible_text(input), *want, "case {name:?}");
    }
}

#[test]
fn html_table() {
    let cases: &[(&str, &str, &str)] = &[
        ("plain", "<p>Hi</p>", "Hi"),
        (
            "gmail",
            "<div dir=\"ltr\">Hello</div><br><div class=\"gmail_quote\"><div class=\"gmail_attr\">On Mon, Apr 2, 2012 at 6:26 PM, A &lt;<a href=\"mailto:a@x.com\">a@x.com</a>&gt; wrote:<br></div><blockquote class=\"gmail_quote\">Hi</blockquote></div>",
            "Hello",
        ),
        (
            "gmail forward kept",
            "<div>FYI</div><div class=\"gmail_quote\">---------- Forwarded message ---------<br>From: <b>A</b><br>Subject: S<br>To: B<br><br><div>Body</div></div>",
            "FYI\n---------- Forwarded message ---------\nFrom: A\nSubject: S\nTo: B\n\nBody",
        ),
        (
            "apple mail",
            "<div>Reply</div><div><br><blockquote type=\"cite\"><div>On Apr 3, 2012, at 4:19 PM, bob &lt;b@x.com&gt; wrote:</div><div>Hi</div></blockquote></div>",
            "Reply",
        ),
        (
            "outlook web",
            "<div>Thanks</div><div id=\"appendonsend\"></div><hr><div id=\"divRplyFwdMsg\"><b>From:</b> A<br><b>Sent:</b> B</div><div>old</div>",
            "Thanks",
        ),
        (
            "outlook desktop border-top div",
            "<div class=WordSection1><p class=MsoNormal>Ok<o:p></o:p></p><p class=MsoNormal><o:p>&nbsp;</o:p></p><div style='border:none;border-top:solid #E1E1E1 1.0pt'><p class=MsoNormal><b>From:</b> Bob &lt;b@x.com&gt; <br><b>Sent:</b> Monday<br><b>To:</b> me<br><b>Subject:</b> RE: x</p></div><p class=MsoNormal>old</p></div>",
            "Ok",
        ),
        (
            "yahoo",
            "<div>Sure</div><div id=\"yahoo_quoted_123\" class=\"yahoo_quoted\"><div>On Monday, Bob wrote:</div><div>old</div></div>",
            "Sure",
        ),
        (
            "outlook mac",
            "<div>Reply</div><span id=\"OLK_SRC_BODY_SECTION\"><div>From: Bob</div></span>",
            "Reply",
        ),
        (
            "gmail signature dropped",
            "<div>Hi</div><div><div dir=\"ltr\" class=\"gmail_signature\">Bob<br>Acme</div></div>",
            "Hi",
        ),
        (
            "inline html reply",
            "<div>On Mon, 2 Apr 2012, Bob &lt;b@x.com&gt; wrote:</div><blockquote type=\"cite\">q1</blockquote><div>a1</div><blockquote type=\"cite\">q2</blockquote>",
            "a1",
        ),
        (
            "outlook ios",
            "<div dir=\"ltr\">Yes</div><div id=\"ms-outlook-mobile-signature\">Get Outlook for iOS</div><hr style=\"display:inline-block\"><div id=\"divRplyFwdMsg\" dir=\"ltr\"><b>From:</b> Bob</div><div>old</div>",
            "Yes",
        ),
        (
            "iphone mail html",
            "<div dir=\"ltr\">Hello</div><div dir=\"ltr\"><br><div dir=\"ltr\">Sent from my iPhone</div><div dir=\"ltr\"><br><blockquote type=\"cite\">On Apr 3, 2012, at 4:19 PM, bob &lt;b@x.com&gt; wrote:<br><br></blockquote></div><blockquote type=\"cite\"><div dir=\"ltr\">Hi</div></blockquote></div>",
            "Hello",
        ),
        (
            "gmail indent is the vendor's text",
            "<div>Steps:</div><blockquote style=\"margin:0 0 0 40px;border:none;padding:0px\"><div>run it</div></blockquote><div>Thanks</div>",
            "Steps:\nrun it\nThanks",
        ),
        (
            "windows live mail",
            "<DIV dir=ltr><DIV>Hi.</DIV><DIV>&nbsp;</DIV><DIV>Alex</DIV><DIV style=\"DISPLAY: inline\"><DIV style=\"FONT: 10pt tahoma\"><DIV>&nbsp;</DIV><DIV style=\"BACKGROUND: #f5f5f5\"><DIV><B>From:</B> <A title=a@x.com href=\"mailto:a@x.com\">Al</A> </DIV><DIV><B>Sent:</B> Thursday, June 26, 2014 3:31 PM</DIV><DIV><B>To:</B> Alex</DIV><DIV><B>Subject:</B> Test</DIV></DIV></DIV><DIV>&nbsp;</DIV></DIV><DIV>Hello!</DIV></DIV>",
            "Hi.\n\nAlex",
        ),
        (
            "thunderbird with signature",
            "<p>Fine</p><div class=\"moz-signature\">-- <br>Bob</div><div class=\"moz-cite-prefix\">On 26.06.2014 14:41, Al wrote:<br></div><blockquote type=\"cite\">Hello</blockquote>",
            "Fine",
        ),
        (
            "only a quote falls back",
            "<blockquote>just quoted</blockquote>",
            "> just quoted",
        ),
    ];
    for (name, input, want) in cases {
        assert_eq!(visible_html(input), *want, "case {name:?}");
    }
}

#[test]
fn html_to_text_table() {
    let cases: &[(&str, &str, &str)] = &[
        ("empty", "", ""),
        ("text only", "plain &amp; simple", "plain & simple"),
        ("br", "a<br>b<br/>c", "a\nb\nc"),
        ("paragraphs", "<p>a</p><p>b</p>", "a\n\nb"),
        (
            "mso paragraphs are lines",
            "<p class=MsoNormal>a</p><p class=MsoNormal>b</p>",
            "a\nb",
        ),
        ("divs", "<div>a</div><div>b</div>", "a\nb"),
        (
            "gmail blank line",
            "<div>a</div><div><br></div><div>b</div>",
            "a\n\nb",
        ),
        ("whitespace collapses", "a \n\t b", "a b"),
        ("inline tags join", "He<b>ll</b>o", "Hello"),
        (
            "link keeps text",
            "<a href=\"http://x\">click here</a>",
            "click here",
        ),
        (
            "script style head dropped",
            "<html><head><title>T</title><style>p{}</style></head><body><script>x()</script>Hi</body></html>",
            "Hi",
        ),
        ("unclosed head ends at body", "<head><meta x><body>Hi", "Hi"),
        ("comments dropped", "a<!-- hidden -->b<!---->c", "abc"),
        (
            "conditional comment dropped",
            "<!--[if gte mso 9]><xml><o:x/></xml><![endif]-->Hi",
            "Hi",
        ),
        (
            "numeric entities",
            "&#65;&#x42;&#x1F600;&#0;&#146;",
            "AB\u{1F600}\u{fffd}\u{2019}",
        ),
        (
            "named entities",
            "&eacute;&uuml;&mdash;&hellip;&euro;",
            "éü—…€",
        ),
        ("unknown entity literal", "&bogus; & &", "&bogus; & &"),
        (
            "legacy entity",
            "a &amp b &copy 2 &copyx",
            "a & b © 2 &copyx",
        ),
        ("nbsp becomes space", "a&nbsp;b", "a b"),
        ("list", "<ul><li>one</li><li>two</li></ul>", "- one\n- two"),
        ("ordered list", "<ol><li>one<li>two</ol>", "1. one\n2. two"),
        (
            "table cells",
            "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>",
            "a b\nc",
        ),
        ("pre keeps spaces", "<pre>a  b\n  c</pre>", "a  b\n  c"),
        (
            "blockquote quoted",
            "x<blockquote>q<br>r</blockquote>y",
            "x\n> q\n> r\ny",
        ),
        (
            "blank line inside a quote keeps the marker",
            "<blockquote><div>a</div><div><br></div><div>b</div></blockquote>",
            "> a\n>\n> b",
        ),
        (
            "nested blockquote",
            "<blockquote>a<blockquote>b</blockquote></blockquote>",
            "> a\n>> b",
        ),
        ("hr", "a<hr>b", "a\n________________________________\nb"),
        ("stray lt", "1 < 2 <3", "1 < 2 <3"),
        ("uppercase tags", "<DIV>A</DIV><BR><P>B</P>", "A\n\nB"),
        ("cdata", "<![CDATA[x<y]]>", "x<y"),
        ("attribute with gt", "<a title=\"a>b\">t</a>", "t"),
    ];
    for (name, input, want) in cases {
        assert_eq!(html_to_text(input), *want, "case {name:?}");
    }
}

#[test]
fn hostile_inputs_do_not_panic() {
    let deep_quotes = "<blockquote>".repeat(10_000) + "x<br>y";
    let deep_lists = "<ol><li>".repeat(5_000);
    let inputs: Vec<String> = vec![
        "<".into(),
        "<a".into(),
        "<a href='".into(),
        "</".into(),
        "<!--".into(),
        "<!".into(),
        "<![CDATA[".into(),
        "<script>".into(),
        "<script></scrip".into(),
        "&".into(),
        "&#".into(),
        "&#x".into(),
        "&#xFFFFFFFFFFFF;".into(),
        "&#99999999999999999999;".into(),
        "&#xD800;".into(),
        "<<<<>>>>".into(),
        "</div></div></blockquote></ol>".into(),
        "<div class=\"gmail_signature\">never closed".into(),
        "<a b=c d='e' f=\"g\" / = ==>x".into(),
        "\u{0}\u{1}\u{fffd}\u{10ffff}".into(),
        "e\u{301}\u{200d}\u{1F468}\u{200D}\u{1F469}".into(),
        "On".into(),
        "On\n".into(),
        "On x\n".into(),
        ":".into(),
        "\u{ff1a}".into(),
        "From:".into(),
        "*".into(),
        "-".into(),
        "—".into(),
        "> ".into(),
        "\r".into(),
        "\r\n\r\n".into(),
        deep_quotes,
        deep_lists,
        "<".repeat(10_000),
        "&".repeat(10_000),
        "a'".repeat(10_000),
        ">\n".repeat(10_000),
        "On Mon wrote\n".repeat(1_000),
        "##\n".repeat(10_000),
        "##- x -##\n".repeat(10_000),
        "Sent from my iPhone\n\n".repeat(10_000),
        "\u{200e}\n".repeat(10_000),
        "\u{130}".repeat(10_000),
        "From: a Sent: b To: c Subject: d\n".repeat(2_000),
        "Von: a\nGesendet: b\nAn: c\n".repeat(2_000),
        "x@y 15:32 ".repeat(10_000) + ":",
        "17.11.2021, 15:32, \"A\" <a@b>:\nx\n".repeat(2_000),
        format!("> {}\nwrapped tail\n", "long quoted line ".repeat(10)).repeat(5_000),
        "---- On x wrote ----\n".repeat(1_000),
        "ср, 17 нояб. 2021 г. в 15:32, A <a@b>\n".repeat(1_000),
        "napisał(a):\n写道：\n님이 작성:\n".repeat(1_000),
        "\u{ff1a}\u{ff08}\u{ff09}\u{3000}".repeat(1_000),
    ];
    for input in &inputs {
        let _ = visible_text(input);
        let _ = visible_html(input);
        let _ = html_to_text(input);
    }
    // Nesting bombs must not blow up the output size.
    let bomb = "<blockquote>".repeat(10_000) + &"x<br>".repeat(1_000);
    assert!(html_to_text(&bomb).len() < 100_000);
}

#[test]
fn unterminated_tag_drops_the_rest() {
    assert_eq!(html_to_text("ok<div class='x"), "ok");
    assert_eq!(html_to_text("ok<!-- never closed"), "ok");
    assert_eq!(html_to_text("ok<style>p{}"), "ok");
}

#[test]
fn attributes_parse() {
    let a = " id=x class = 'a  B' data-x=\"q\" checked";
    assert_eq!(attr(a, "id"), Some("x"));
    assert_eq!(attr(a, "CLASS"), Some("a  B"));
    assert_eq!(attr(a, "data-x"), Some("q"));
    assert_eq!(attr(a, "checked"), Some(""));
    assert_eq!(attr(a, "missing"), None);
    assert!(has_class(a, "b"));
}

#[test]
fn fold_irons_out_client_variations() {
    assert_eq!(patterns::fold("Von:\u{200e} Max"), "von: max");
    assert_eq!(patterns::fold("\u{130}LET\u{130}LEN"), "iletilen");
    assert_eq!(patterns::fold("写道\u{ff1a}"), "写道:");
    assert_eq!(patterns::fold("a\u{a0}b\u{3000}c"), "a b c");
    assert_eq!(patterns::fold("iPhone\u{2019}umdan"), "iphone'umdan");
}

#[test]
fn times_dates_and_addresses() {
    for (text, want) in [
        ("at 15:32", true),
        ("kl. 15.32 skrev", true),
        ("3:32 pm", true),
        ("15h32", true),
        ("15:32:00 +0300", true),
        ("am 17.11. schrieb", false),
        ("17.11.2021", false),
        ("in 2019 my colleague", false),
        ("version 1.2.3", false),
        ("123:45", false),
    ] {
        assert_eq!(has_time(text), want, "has_time({text:?})");
    }
    for (text, want) in [
        ("17.11.2021, 15:32, a", true),
        ("2021/11/17 15:32", true),
        ("2021年11月17日(水) 15:32", true),
        ("2021년 11월 17일", true),
        ("ons. 17. nov. 2021", true),
        ("ср, 17 нояб.", true),
        ("wednesday, 17 november", true),
        ("3 people came", false),
        ("so i wrote", false),
        ("mon ami", false),
        ("", false),
    ] {
        assert_eq!(starts_with_date(text), want, "starts_with_date({text:?})");
    }
    assert!(has_address("anna agent <anna@x.com>"));
    assert!(!has_address("meet @ 15:00"));
    assert!(ends_with_address("from anna <anna@x.com>"));
    assert!(ends_with_address("anna (anna@x.com)"));
    assert!(!ends_with_address("anna@x.com wrote"));
}

#[test]
fn quote_header_strength() {
    // (folded header, Some(strong) or None)
    let cases: &[(&str, Option<bool>)] = &[
        (
            "on wed, nov 17, 2021 at 3:32 pm anna <anna@x.com> wrote:",
            Some(true),
        ),
        (
            "am 17.11.2021 um 15:32 schrieb anna <anna@x.com>:",
            Some(true),
        ),
        (
            "anna <anna@x.com> kirjoitti 17.11.2021 kello 15.32:",
            Some(true),
        ),
        (
            "anna <anna@x.com> ezt írta (időpont: 2021. nov. 17., sze, 15:32):",
            Some(true),
        ),
        ("17.11.2021, 15:32, \"anna\" <anna@x.com>:", Some(true)),
        (
            "---- on wed, 17 nov 2021 15:32:00 +0300 anna <anna@x.com> wrote ----",
            Some(true),
        ),
        (
            "on wed, 17 nov 2021 15:32 anna <anna@x.com> wrote",
            Some(false),
        ),
        ("2014/11/17 anna <anna@x.com>", Some(false)),
        ("2014/11/17 anna <anna@x.com> sent the parts", None),
        ("anna kirjoitti 17.11.2021 klo 15.32:", Some(false)),
        ("please send it to anna@x.com by 15:30:", Some(false)),
        ("as i wrote:", Some(false)),
        ("in 2019 my colleague wrote:", Some(false)),
        (
            "am 17.11. schrieb der spediteur, dass alles passt:",
            Some(false),
        ),
        ("on monday i wrote to the carrier:", Some(false)),
        ("i wrote it down", None),
        ("the parts ship monday:", None),
        ("we rewrote the module:", None),
    ];
    for (text, want) in cases {
        assert_eq!(classify_quote_header(text), *want, "{text:?}");
    }
}

#[test]
fn helpdesk_markers_and_footers() {
    for marker in [
        "##- please type your reply above this line -##",
        "##- bitte geben sie ihre antwort über dieser zeile ein. -##",
        "##- このラインの上に返信を入力してください -##",
        "-- reply above this line --",
        "reply above this line.",
        "[reply above this line]",
    ] {
        assert!(is_helpdesk_marker(marker), "{marker:?}");
    }
    for prose in [
        "please write the order number above this line on the form.",
        "the total is above this line",
        "####",
        "-- --",
        "## ##",
        "##       automatic bounce notification (english text below)           ##",
    ] {
        assert!(!is_helpdesk_marker(prose), "{prose:?}");
    }
    for footer in [
        "Sent from my iPhone",
        "Sent from TypeApp<http://www.typeapp.com/r?b=1>",
        "Von meinem iPhone gesendet",
        "iPhone\u{2019}umdan gönderildi",
        "iPhoneから送信",
        "发自我的iPhone",
        "iPhone에서 보냄",
    ] {
        assert!(is_client_footer(footer), "{footer:?}");
    }
    for prose in [
        "Sent from my desk, which beats my phone.",
        "Sent from my office in Berlin where the warehouse is",
        "Von meinem Kollegen wurde das Paket gestern am Nachmittag gesendet",
        "Wysłane z magazynu w poniedziałek",
        "",
    ] {
        assert!(!is_client_footer(prose), "{prose:?}");
    }
}

#[test]
fn sign_offs() {
    assert!(is_sign_off("\u{2014}Ryan", "Shipped."));
    assert!(is_sign_off("\u{2013} Ryan Smith", "Shipped."));
    assert!(is_sign_off("-Ryan", ""));
    assert!(is_sign_off("-Ryan", "Thanks,"));
    assert!(!is_sign_off("-Milk", "Todo:"));
    assert!(!is_sign_off("- Milk", ""));
    assert!(!is_sign_off("\u{2014}Eggs", "\u{2014}Milk"));
    assert!(!is_sign_off("-Ryan.", ""));
}

#[test]
fn wrapped_quote_tails() {
    let long = "> Could you confirm the delivery date for the two hundred replacement";
    assert!(continues_wrapped_quote(long, "units and"));
    assert!(!continues_wrapped_quote(long, "Monday, as planned."));
    assert!(!continues_wrapped_quote("> Short question", "yes"));
    assert!(!continues_wrapped_quote(
        "> Could you confirm the delivery date for the two hundred units, please?",
        "yes, monday"
    ));
    assert!(!continues_wrapped_quote(
        "not quoted at all but long enough to count as a wrapped line",
        "tail"
    ));
}

#[test]
fn policies() {
    // All quote: the whole text comes back rather than nothing.
    let all_quote = "On Mon, 2 Apr 2012 at 15:32, Bob <b@x.com> wrote:\n> only a quote";
    assert_eq!(visible_text(all_quote), all_quote);
    // A helpdesk marker ends the reply; at the top it is dropped and the rest kept.
    assert_eq!(
        visible_text("Done.\n\n##- Please type your reply above this line -##\n\nTicket text"),
        "Done."
    );
    assert_eq!(
        visible_text("##- Please type your reply above this line -##\n\nTicket text"),
        "Ticket text"
    );
    // A reply below the quote is kept, and so are inline answers.
    assert_eq!(
        visible_text("On Mon, 2 Apr 2012 at 15:32, Bob <b@x.com> wrote:\n> q1\n\na1\n\n> q2\n\na2"),
        "a1\n\na2"
    );
}

#[test]
fn wrapped_headers_need_their_verb_when_opened_by_an_address() {
    // A bounce's recipient line and host line are not a quote header.
    let bounce = "<kijitora@example.jp>:\n    mfsmax.example.jp [192.0.2.45]:\n>>> RCPT TO:<kijitora@example.jp>\n<<< 550 Unknown user";
    assert!(visible_text(bounce).starts_with("<kijitora@example.jp>:\n    mfsmax.example.jp"));
    let sendmail = "554 <k@example.org>... 550 Host unknown (answer)\nWhile talking to smtp.example.com:\n>>> RCPT To:<k@example.com>";
    assert!(
        visible_text(sendmail)
            .starts_with("554 <k@example.org>... 550 Host unknown (answer)\nWhile talking")
    );
    // Gmail's name-first German header wrapped before the time still is one.
    let gmail = "Danke.\n\nAnna <anna@x.de> schrieb am Mi., 17. Nov. 2021,\n15:32:\n\n> Hallo";
    assert_eq!(visible_text(gmail), "Danke.");
}

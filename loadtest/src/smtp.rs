//! A tiny SMTP sink for the `otp` scenario: accepts every message on loopback (an RFC 5321
//! subset: greeting, EHLO/HELO, MAIL FROM, RCPT TO, DATA, RSET, NOOP, QUIT), pulls the 6-digit
//! code out of the body and hands it to whoever waits for that recipient. A test sink, not a
//! mail server: no TLS, no AUTH, no relaying, bounded line and message sizes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Longest command or body line read (RFC 5321 allows 1000 with CRLF).
const MAX_LINE: u64 = 4096;
/// Largest message accepted; the rest of a longer one is refused with 552.
const MAX_MESSAGE: usize = 1024 * 1024;
/// A client silent for this long is disconnected.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Codes that arrived with nobody waiting are kept up to this many, then dropped.
const MAX_UNCLAIMED: usize = 100_000;

/// Where codes meet the tasks waiting for them, keyed by lower-cased recipient address.
#[derive(Debug, Default)]
pub struct Codes {
    slots: Mutex<HashMap<String, Slot>>,
}

#[derive(Debug)]
enum Slot {
    Waiting(oneshot::Sender<String>),
    Arrived(String),
}

impl Codes {
    pub fn new() -> Arc<Codes> {
        Arc::new(Codes::default())
    }

    /// Waits for the next code mailed to `email`. Register before triggering the mail; a code
    /// that already arrived unclaimed is handed over at once. A later `expect` for the same
    /// address replaces this one.
    pub fn expect(&self, email: &str) -> oneshot::Receiver<String> {
        let (tx, rx) = oneshot::channel();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.remove(&email.to_ascii_lowercase()) {
            Some(Slot::Arrived(code)) => {
                let _ = tx.send(code);
            }
            _ => {
                slots.insert(email.to_ascii_lowercase(), Slot::Waiting(tx));
            }
        }
        rx
    }

    /// Hands `code` to the task waiting for `email`, or keeps it for the next one.
    pub fn deliver(&self, email: &str, code: String) {
        let key = email.to_ascii_lowercase();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let code = match slots.remove(&key) {
            Some(Slot::Waiting(tx)) => match tx.send(code) {
                Ok(()) => return,
                Err(code) => code,
            },
            _ => code,
        };
        if slots.len() >= MAX_UNCLAIMED {
            slots.retain(|_, s| matches!(s, Slot::Waiting(_)));
        }
        slots.insert(key, Slot::Arrived(code));
    }
}

/// Serves SMTP on `listener` until `shutdown` resolves; each session is its own task, and
/// every code found is [`Codes::deliver`]ed to each recipient of its message.
pub async fn serve(listener: TcpListener, codes: Arc<Codes>, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let codes = Arc::clone(&codes);
                    sessions.spawn(async move {
                        let (read, write) = stream.into_split();
                        let _ = session(read, write, &codes).await;
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    sessions.abort_all();
}

/// One SMTP dialogue: answers commands until QUIT, EOF, an idle timeout or an I/O error.
///
/// # Errors
/// The I/O error that ended the dialogue.
pub async fn session<R, W>(read: R, mut write: W, codes: &Codes) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(read);
    let mut recipients: Vec<String> = Vec::new();
    let mut from_seen = false;
    write.write_all(b"220 loadtest SMTP sink ready\r\n").await?;
    loop {
        let Some(line) = read_line(&mut reader).await? else {
            return Ok(());
        };
        let upper = line.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or("");
        let answer: &[u8] = match verb {
            "EHLO" => b"250-loadtest\r\n250-8BITMIME\r\n250 SIZE 1048576\r\n",
            "HELO" => b"250 loadtest\r\n",
            "MAIL" if upper.starts_with("MAIL FROM:") => {
                recipients.clear();
                from_seen = true;
                b"250 OK\r\n"
            }
            "RCPT" if upper.starts_with("RCPT TO:") && from_seen => {
                recipients.push(address(&line["RCPT TO:".len()..]));
                b"250 OK\r\n"
            }
            "RCPT" => b"503 need MAIL FROM first\r\n",
            "DATA" if recipients.is_empty() => b"503 need RCPT TO first\r\n",
            "DATA" => {
                write
                    .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let Some(message) = read_data(&mut reader).await? else {
                    return Ok(());
                };
                from_seen = false;
                let recipients = std::mem::take(&mut recipients);
                match message {
                    Some(message) => {
                        if let Some(code) = extract_code(&message) {
                            for r in &recipients {
                                codes.deliver(r, code.clone());
                            }
                        }
                        b"250 OK: queued\r\n"
                    }
                    None => b"552 message too large\r\n",
                }
            }
            "RSET" => {
                recipients.clear();
                from_seen = false;
                b"250 OK\r\n"
            }
            "NOOP" => b"250 OK\r\n",
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 command not implemented\r\n",
        };
        write.write_all(answer).await?;
    }
}

/// The next line without its line ending; `None` at EOF or after an idle timeout.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        IDLE_TIMEOUT,
        (&mut *reader).take(MAX_LINE).read_until(b'\n', &mut buf),
    )
    .await;
    match read {
        Ok(Ok(0)) | Err(_) => Ok(None),
        Ok(Ok(_)) => {
            while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                buf.pop();
            }
            Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
        }
        Ok(Err(e)) => Err(e),
    }
}

/// The message after DATA up to the lone ".", dot-unstuffed, lines joined with CRLF.
/// `Some(None)` when it was over [`MAX_MESSAGE`]; `None` at EOF.
async fn read_data<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> std::io::Result<Option<Option<Vec<u8>>>> {
    let mut message = Vec::new();
    let mut too_large = false;
    loop {
        let Some(line) = read_line(reader).await? else {
            return Ok(None);
        };
        if line == "." {
            return Ok(Some((!too_large).then_some(message)));
        }
        let line = line.strip_prefix('.').unwrap_or(&line);
        if message.len() + line.len() + 2 > MAX_MESSAGE {
            too_large = true;
            continue;
        }
        message.extend_from_slice(line.as_bytes());
        message.extend_from_slice(b"\r\n");
    }
}

/// `<user@example.com> SIZE=…` → `user@example.com`, lower-cased.
fn address(arg: &str) -> String {
    let arg = arg.trim();
    let inner = match (arg.find('<'), arg.find('>')) {
        (Some(start), Some(end)) if start < end => &arg[start + 1..end],
        _ => arg.split_whitespace().next().unwrap_or(""),
    };
    inner.to_ascii_lowercase()
}

/// The first 6-digit code (six digits with no digit on either side) in a message's text:
/// `text/plain` parts first, then the rest (HTML without its tags), each decoded from
/// quoted-printable or base64 as its headers say. Headers are never searched.
pub fn extract_code(message: &[u8]) -> Option<String> {
    let message = String::from_utf8_lossy(message);
    let mut texts = Vec::new();
    collect_texts(&message, 0, &mut texts);
    texts.sort_by_key(|(plain, _)| !plain);
    texts.iter().find_map(|(_, text)| six_digits(text))
}

/// Decoded text of every leaf part of `entity`, flagged `true` for `text/plain`.
fn collect_texts(entity: &str, depth: usize, out: &mut Vec<(bool, String)>) {
    let (head, body) = split_head(entity);
    let header = |name: &str| header_value(head, name);
    let content_type = header("content-type").unwrap_or_default();
    let lower_type = content_type.to_ascii_lowercase();
    if lower_type.starts_with("multipart/") && depth < 8 {
        if let Some(boundary) = parameter(&content_type, "boundary") {
            let delimiter = format!("--{boundary}");
            for part in body.split(delimiter.as_str()).skip(1) {
                if part.starts_with("--") {
                    break;
                }
                let part = part
                    .strip_prefix("\r\n")
                    .or_else(|| part.strip_prefix('\n'));
                collect_texts(part.unwrap_or_default(), depth + 1, out);
            }
            return;
        }
    }
    let encoding = header("content-transfer-encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let decoded = match encoding.trim() {
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            STANDARD
                .decode(compact)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        }
        "quoted-printable" => quoted_printable(body),
        _ => body.to_string(),
    };
    let plain = lower_type.is_empty() || lower_type.starts_with("text/plain");
    let text = if lower_type.starts_with("text/html") {
        strip_tags(&decoded)
    } else {
        decoded
    };
    out.push((plain, text));
}

/// Splits an entity at its first empty line into headers and body.
fn split_head(entity: &str) -> (&str, &str) {
    if let Some(i) = entity.find("\r\n\r\n") {
        (&entity[..i], &entity[i + 4..])
    } else if let Some(i) = entity.find("\n\n") {
        (&entity[..i], &entity[i + 2..])
    } else {
        (entity, "")
    }
}

/// The unfolded value of header `name` (case-insensitive) in `head`.
fn header_value(head: &str, name: &str) -> Option<String> {
    let mut value: Option<String> = None;
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(v) = value.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if value.is_some() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            if n.trim().eq_ignore_ascii_case(name) {
                value = Some(v.trim().to_string());
            }
        }
    }
    value
}

/// Parameter `name` of a header value such as `multipart/alternative; boundary="abc"`.
fn parameter(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

fn quoted_printable(body: &str) -> String {
    let bytes = body.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let rest = &bytes[i + 1..];
            if rest.starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if rest.starts_with(b"\n") {
                i += 2;
                continue;
            }
            let hex = rest
                .get(..2)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `html` without `<style>`/`<head>` blocks and tags, so attribute values (colours such as
/// `#111827`) cannot pass for a code.
fn strip_tags(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len());
    let mut i = 0;
    while i < html.len() {
        let rest = &lower[i..];
        if let Some(block) = ["<style", "<head", "<script"]
            .iter()
            .find(|t| rest.starts_with(**t))
        {
            let close = format!("</{}", &block[1..]);
            match rest.find(&close) {
                Some(end) => i += end + close.len(),
                None => break,
            }
            continue;
        }
        if rest.starts_with('<') {
            match rest.find('>') {
                Some(end) => {
                    i += end + 1;
                    out.push(' ');
                }
                None => break,
            }
            continue;
        }
        let ch = html[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The first run of exactly six ASCII digits in `text`.
fn six_digits(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i - start == 6 {
                return Some(text[start..i].to_string());
            }
        } else {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_code_in_a_quoted_printable_multipart_message() {
        let message = "From: a@b\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n\
            Content-Type: multipart/alternative;\r\n boundary=\"XYZ\"\r\n\r\n\
            --XYZ\r\nContent-Type: text/html; charset=utf-8\r\n\
            Content-Transfer-Encoding: quoted-printable\r\n\r\n\
            <p style=3D\"color:#111827\">Code</p><p>99=\r\n8877</p>\r\n\
            --XYZ\r\nContent-Type: text/plain; charset=utf-8\r\n\
            Content-Transfer-Encoding: quoted-printable\r\n\r\n\
            Use this code to sign in:\r\n\r\n    042917\r\n\r\nIt expires in 10 minut=\r\nes.\r\n\
            --XYZ--\r\n";
        assert_eq!(extract_code(message.as_bytes()).as_deref(), Some("042917"));
    }

    #[test]
    fn finds_the_code_in_base64_and_html_only_messages() {
        let body = STANDARD.encode("your code is 123456, valid 10 minutes");
        let message = format!(
            "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n{body}\r\n"
        );
        assert_eq!(extract_code(message.as_bytes()).as_deref(), Some("123456"));
        let html = "Content-Type: text/html\r\n\r\n<style>.c{color:#222222}</style>\
                    <p style=\"color:#111827\">1234567 654321</p>";
        assert_eq!(extract_code(html.as_bytes()).as_deref(), Some("654321"));
        assert_eq!(extract_code(b"Subject: 123456\r\n\r\nno code"), None);
    }

    #[test]
    fn a_code_waits_for_its_recipient_either_way_round() {
        let codes = Codes::new();
        let mut early = codes.expect("A@x.example");
        codes.deliver("a@x.example", "111111".into());
        assert_eq!(early.try_recv().ok().as_deref(), Some("111111"));
        codes.deliver("b@x.example", "222222".into());
        let mut late = codes.expect("b@x.example");
        assert_eq!(late.try_recv().ok().as_deref(), Some("222222"));
    }

    #[test]
    fn parses_envelope_addresses() {
        assert_eq!(
            address(" <User1@Loadtest.Example> SIZE=100"),
            "user1@loadtest.example"
        );
        assert_eq!(address("plain@x"), "plain@x");
    }
}

//! Request parsing: httparse for the head, Content-Length or chunked bodies.

use super::render::ConnMode;
use super::stats::Route;

/// Larger heads get 431; larger bodies get 413.
pub(crate) const MAX_HEAD: usize = 64 << 10;
pub(crate) const MAX_BODY: usize = 64 << 20;
const MAX_HEADERS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Head,
    Post,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    Length(usize),
    Chunked,
}

#[derive(Debug)]
pub(crate) struct Head {
    pub method: Method,
    pub route: Route,
    pub mode: ConnMode,
    pub http10: bool,
    pub framing: Framing,
    pub expect_continue: bool,
    pub len: usize,
    /// Where the routed path (alias prefix and query removed) lies in the parsed buffer.
    pub path: std::ops::Range<usize>,
}

#[derive(Debug)]
pub(crate) enum HeadResult {
    Partial,
    Complete(Head),
    /// Answer with this status and close: the stream cannot be trusted any more.
    Invalid(u16),
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

pub(crate) fn parse_head(buf: &[u8]) -> HeadResult {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return HeadResult::Invalid(431),
        Ok(httparse::Status::Partial) => return HeadResult::Partial,
        Err(httparse::Error::TooManyHeaders) => return HeadResult::Invalid(431),
        Err(_) => return HeadResult::Invalid(400),
    };
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        _ => Method::Other,
    };
    let path = req.path.unwrap_or("");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let http10 = req.version == Some(0);
    let (mut close, mut keep_alive) = (false, false);
    let mut length: Option<usize> = None;
    let (mut chunked, mut expect_continue) = (false, false);
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let Some(n) = std::str::from_utf8(h.value)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<usize>().ok())
            else {
                return HeadResult::Invalid(400);
            };
            if length.is_some_and(|l| l != n) {
                return HeadResult::Invalid(400);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only a lone "chunked" is supported; anything else cannot be framed.
            if !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") || chunked {
                return HeadResult::Invalid(400);
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            close |= has_token(h.value, "close");
            keep_alive |= has_token(h.value, "keep-alive");
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = has_token(h.value, "100-continue");
        }
    }
    let framing = match (chunked, length) {
        // Both present is a smuggling vector; refuse rather than guess.
        (true, Some(_)) => return HeadResult::Invalid(400),
        (true, None) => Framing::Chunked,
        (false, n) => Framing::Length(n.unwrap_or(0)),
    };
    if matches!(framing, Framing::Length(n) if n > MAX_BODY) {
        return HeadResult::Invalid(413);
    }
    let mode = if close || (http10 && !keep_alive) {
        ConnMode::Close
    } else if http10 {
        ConnMode::KeepAlive10
    } else {
        ConnMode::KeepAlive
    };
    let (route, routed) = Route::from_path(path);
    // `routed` is a slice of `buf`: keep its position, not a borrow.
    let at = routed.as_ptr() as usize - buf.as_ptr() as usize;
    HeadResult::Complete(Head {
        method,
        route,
        path: at..at + routed.len(),
        mode,
        http10,
        framing,
        expect_continue,
        len,
    })
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Chunked {
    Partial,
    /// The encoded body (trailers included) is this long.
    Complete(usize),
    Invalid(u16),
}

/// Walks a chunked body without copying; `decode_chunked` copies once it is complete.
pub(crate) fn scan_chunked(buf: &[u8]) -> Chunked {
    let mut pos = 0;
    let mut total = 0usize;
    loop {
        let (hdr, size) = match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete(x)) => x,
            Ok(httparse::Status::Partial) if buf.len() - pos > 1024 => {
                return Chunked::Invalid(400)
            }
            Ok(httparse::Status::Partial) => return Chunked::Partial,
            Err(_) => return Chunked::Invalid(400),
        };
        pos += hdr;
        if size == 0 {
            // Trailer section: header lines up to an empty line.
            loop {
                let rest = &buf[pos..];
                let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                    return if rest.len() > MAX_HEAD {
                        Chunked::Invalid(431)
                    } else {
                        Chunked::Partial
                    };
                };
                pos += eol + 2;
                if eol == 0 {
                    return Chunked::Complete(pos);
                }
            }
        }
        let size = match usize::try_from(size) {
            Ok(s) if total + s <= MAX_BODY => s,
            _ => return Chunked::Invalid(413),
        };
        total += size;
        if buf.len() < pos + size + 2 {
            return Chunked::Partial;
        }
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Chunked::Invalid(400);
        }
        pos += size + 2;
    }
}

/// Decodes a body that `scan_chunked` found complete.
pub(crate) fn decode_chunked(buf: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut pos = 0;
    while let Ok(httparse::Status::Complete((hdr, size))) = httparse::parse_chunk_size(&buf[pos..])
    {
        pos += hdr;
        if size == 0 {
            return;
        }
        let size = size as usize;
        out.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Head {
        match parse_head(s.as_bytes()) {
            HeadResult::Complete(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn heads() {
        let req = "POST /api/generate?x=1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let h = head(req);
        assert_eq!(h.route, Route::Gen(crate::llm::Api::OllamaGenerate));
        assert_eq!(h.framing, Framing::Length(5));
        assert_eq!(h.mode, ConnMode::KeepAlive);
        assert_eq!(h.len, req.len() - 5);
        let h = head("GET / HTTP/1.0\r\n\r\n");
        assert_eq!(h.mode, ConnMode::Close);
        let h = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert_eq!(h.mode, ConnMode::KeepAlive10);
        let h = head("GET /nope HTTP/1.1\r\nConnection: foo, close\r\n\r\n");
        assert_eq!((h.mode, h.route), (ConnMode::Close, Route::Other));
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\n"),
            HeadResult::Partial
        ));
        assert!(matches!(
            parse_head(b"garbage\r\n\r\n"),
            HeadResult::Invalid(400)
        ));
        assert!(matches!(
            parse_head(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            HeadResult::Invalid(400)
        ));
        assert!(matches!(
            parse_head(b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n"),
            HeadResult::Invalid(413)
        ));
    }

    #[test]
    fn chunked() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        assert_eq!(scan_chunked(body), Chunked::Complete(body.len() - 4));
        for cut in 0..body.len() - 4 {
            assert_eq!(scan_chunked(&body[..cut]), Chunked::Partial, "cut {cut}");
        }
        let mut out = Vec::new();
        decode_chunked(body, &mut out);
        assert_eq!(out, b"hello world");
        assert_eq!(scan_chunked(b"0\r\n\r\n"), Chunked::Complete(5));
        assert_eq!(scan_chunked(b"3\r\nabcXY"), Chunked::Invalid(400));
    }
}

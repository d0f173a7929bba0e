//! Incremental HTTP/1.1 response parser for the load generator's hot path.
//!
//! The parser is a small state machine that is reused across responses (`reset`), never
//! allocates, and never keeps copies of input bytes. The caller owns the read buffer:
//!
//! * `feed` returns how many bytes at the front of `input` were used. The caller drops those
//!   and presents the rest again, followed by newly read bytes.
//! * Only an incomplete *head* is ever left unconsumed (it is re-parsed by `httparse` once more
//!   bytes arrive, so the caller must keep up to [`MAX_HEAD`] bytes contiguous). `consumed` is
//!   then 0, except that skipped 1xx heads and stray blank lines before a status line are
//!   consumed. Everything after the head — body bytes, chunk-size lines, chunk extensions,
//!   trailers — is consumed into the parser state as it arrives, so `Partial { consumed }`
//!   always equals `input.len()` once the final head has been parsed.

/// Largest response head (status line + header fields + blank line) accepted, in bytes.
pub const MAX_HEAD: usize = 64 * 1024;

/// Header fields parsed without allocating; a head with more is still accepted (within
/// `MAX_HEAD`).
pub const MAX_HEADERS: usize = 64;

/// Largest chunk-size line (size + extensions) or trailer line, excluding its LF, in bytes.
pub const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Receives the decoded body bytes of the response being parsed (chunk framing removed),
/// in order, possibly in many pieces. Also told when the head has been parsed.
pub trait BodySink {
    /// Called once per response with the final (non-1xx) head, before any body byte.
    fn on_head(&mut self, _head: &ResponseHead) {}
    /// Called with each piece of decoded body as soon as it arrives.
    fn on_body(&mut self, _data: &[u8]) {}
}

impl BodySink for () {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// false when the server will close after this response (Connection: close,
    /// HTTP/1.0 without keep-alive, or a close-delimited body)
    pub keep_alive: bool,
    /// The body's Content-Encoding (framing ignores it; the LLM body path decodes it).
    pub content_encoding: ContentEncoding,
}

/// A response body's Content-Encoding, as far as blast can decode it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContentEncoding {
    #[default]
    Identity,
    Gzip,
    /// zlib-wrapped DEFLATE (RFC 9110 §8.4.1.2).
    Deflate,
    /// Any other coding, or more than one: named in the error it causes.
    Other(CodingName),
}

/// A coding's name as it came, cut to a few bytes, kept inline so that heads stay `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodingName {
    bytes: [u8; 24],
    len: u8,
}

impl CodingName {
    fn new(value: &[u8]) -> CodingName {
        let mut bytes = [0; 24];
        let len = value.len().min(bytes.len());
        bytes[..len].copy_from_slice(&value[..len]);
        CodingName {
            bytes,
            len: len as u8,
        }
    }

    pub fn as_str(&self) -> &str {
        let b = &self.bytes[..self.len as usize];
        std::str::from_utf8(b).unwrap_or("(not text)")
    }
}

impl ContentEncoding {
    /// A Content-Encoding field value: `identity` is none; one gzip (`x-gzip`) or deflate
    /// coding is decoded; anything else is named.
    fn parse(value: &[u8]) -> ContentEncoding {
        let mut codings = list_elements(value).filter(|c| !is_word(c, b"identity"));
        match (codings.next(), codings.next()) {
            (None, _) => ContentEncoding::Identity,
            (Some(c), None) if is_word(c, b"gzip") || is_word(c, b"x-gzip") => {
                ContentEncoding::Gzip
            }
            (Some(c), None) if is_word(c, b"deflate") => ContentEncoding::Deflate,
            _ => ContentEncoding::Other(CodingName::new(trim_ows(value))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Need more bytes. `consumed` bytes at the front of the input were used and must be
    /// dropped by the caller; the rest must be presented again, followed by new bytes.
    Partial { consumed: usize },
    /// One response is complete after `consumed` bytes. Bytes after that belong to the next
    /// (pipelined) response; call `reset` before feeding them.
    Complete { consumed: usize, head: ResponseHead },
}

#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("malformed response head: {0}")]
    Head(#[from] httparse::Error),
    #[error("response head larger than {} bytes", MAX_HEAD)]
    HeadTooLarge,
    #[error("invalid status code {0}")]
    BadStatus(u16),
    #[error("101 Switching Protocols is not supported")]
    UnsupportedUpgrade,
    #[error("invalid Content-Length")]
    BadContentLength,
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    #[error("invalid chunk size")]
    BadChunkSize,
    #[error("chunk size does not fit in 64 bits")]
    ChunkSizeOverflow,
    #[error("invalid chunked framing")]
    BadChunkFraming,
    #[error("chunk size line or trailer line longer than {} bytes", MAX_CHUNK_LINE)]
    ChunkLineTooLong,
    #[error("connection closed in the middle of a response")]
    UnexpectedEof,
    #[error("feed called after a complete response without reset")]
    NotReset,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    /// Content-Length body; bytes still expected.
    Length(u64),
    Chunked(Chunk),
    /// Body delimited by connection close.
    Close,
    Done,
    /// Sticky: a broken stream stays broken until `reset`.
    Failed(ParseError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Hex digits of the chunk size.
    Size,
    /// Whitespace after the size (tolerated before `;` or the line end).
    SizeWs,
    /// Chunk extensions: ignored up to the line end.
    Ext,
    /// CR of the size line seen; LF required.
    SizeLf,
    Data,
    /// End of chunk data; CRLF (or bare LF) required.
    DataCr,
    DataLf,
    /// Start of a trailer line or of the final blank line.
    TrailerStart,
    Trailer,
    /// CR ending a trailer line seen; LF required.
    TrailerLf,
    /// CR of the final blank line seen; LF required.
    FinalLf,
}

/// What the header fields say about framing and persistence.
struct Fields {
    close: bool,
    keep_alive: bool,
    /// Some(last coding is chunked) when Transfer-Encoding is present.
    transfer_encoding: Option<bool>,
    /// Errors are deferred: Content-Length only matters when it decides the framing.
    content_length: Result<Option<u64>, ParseError>,
    content_encoding: ContentEncoding,
}

#[derive(Debug)]
pub struct ResponseParser {
    state: State,
    head_request: bool,
    /// Some byte of the current response has been seen (decides Ok(None) vs error on EOF).
    started: bool,
    /// Length of the incomplete head that httparse has already scanned: unless a new byte
    /// is an LF the head cannot have completed, so re-parsing can be skipped.
    head_scanned: usize,
    /// The scanned head ends inside a field value (see `in_field_value`).
    head_in_value: bool,
    /// The final head of the current response has been parsed (it is `head`).
    has_head: bool,
    head: ResponseHead,
    chunk_size: u64,
    chunk_digits: bool,
    line_len: usize,
}

impl Default for ResponseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseParser {
    pub fn new() -> Self {
        ResponseParser {
            state: State::Head,
            head_request: false,
            started: false,
            head_scanned: 0,
            head_in_value: false,
            has_head: false,
            head: ResponseHead {
                status: 0,
                keep_alive: false,
                content_encoding: ContentEncoding::Identity,
            },
            chunk_size: 0,
            chunk_digits: false,
            line_len: 0,
        }
    }

    /// Prepare for the next response. `head_request`: the request was HEAD, so no body follows.
    pub fn reset(&mut self, head_request: bool) {
        self.state = State::Head;
        self.head_request = head_request;
        self.started = false;
        self.head_scanned = 0;
        self.head_in_value = false;
        self.has_head = false;
    }

    /// The final head of a response that arrived but did not complete (its body was cut
    /// short, timed out or broken): what the status of a failed request was.
    pub fn unfinished_head(&self) -> Option<ResponseHead> {
        match self.state {
            State::Done => None,
            _ => self.has_head.then_some(self.head),
        }
    }

    /// True when some bytes of the current response have been seen (an incomplete head the
    /// caller is holding counts, as do skipped 1xx responses) and it is not yet complete.
    pub fn in_progress(&self) -> bool {
        match self.state {
            State::Head => self.started,
            State::Length(_) | State::Chunked(_) | State::Close => true,
            State::Done | State::Failed(_) => false,
        }
    }

    /// Parses as much of the current response as `input` holds, handing decoded body bytes
    /// to `sink`. After an error the parser keeps returning it until `reset`.
    pub fn feed<S: BodySink>(
        &mut self,
        input: &[u8],
        sink: &mut S,
    ) -> Result<Progress, ParseError> {
        let r = self.feed_inner(input, sink);
        if let Err(e) = r {
            self.state = State::Failed(e);
        }
        r
    }

    /// The peer closed the connection (read returned 0). Returns the head if this completes a
    /// close-delimited body; an error if a response was in progress otherwise
    /// (UnexpectedEof); and Ok(None) when no byte of a response had been seen yet
    /// (the server closed an idle keep-alive connection).
    pub fn on_eof<S: BodySink>(
        &mut self,
        _sink: &mut S,
    ) -> Result<Option<ResponseHead>, ParseError> {
        match self.state {
            State::Head if !self.started => Ok(None),
            State::Done => Ok(None),
            State::Close => {
                self.state = State::Done;
                Ok(Some(self.head))
            }
            State::Head | State::Length(_) | State::Chunked(_) => {
                self.state = State::Failed(ParseError::UnexpectedEof);
                Err(ParseError::UnexpectedEof)
            }
            State::Failed(e) => Err(e),
        }
    }

    fn feed_inner<S: BodySink>(
        &mut self,
        input: &[u8],
        sink: &mut S,
    ) -> Result<Progress, ParseError> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Head => {
                    if !self.parse_head(input, &mut pos, sink)? {
                        return Ok(Progress::Partial { consumed: pos });
                    }
                    if self.state == State::Done {
                        return Ok(self.complete(pos));
                    }
                }
                State::Length(remaining) => {
                    let n = remaining.min((input.len() - pos) as u64) as usize;
                    if n > 0 {
                        sink.on_body(&input[pos..pos + n]);
                    }
                    pos += n;
                    let remaining = remaining - n as u64;
                    if remaining == 0 {
                        self.state = State::Done;
                        return Ok(self.complete(pos));
                    }
                    self.state = State::Length(remaining);
                    return Ok(Progress::Partial { consumed: pos });
                }
                State::Chunked(chunk) => return self.feed_chunked(chunk, input, pos, sink),
                State::Close => {
                    if pos < input.len() {
                        sink.on_body(&input[pos..]);
                    }
                    return Ok(Progress::Partial {
                        consumed: input.len(),
                    });
                }
                State::Done => return Err(ParseError::NotReset),
                State::Failed(e) => return Err(e),
            }
        }
    }

    fn complete(&self, consumed: usize) -> Progress {
        Progress::Complete {
            consumed,
            head: self.head,
        }
    }

    /// Parses one head starting at `*pos`. Returns false when more bytes are needed; true when
    /// the state has moved past the head (a skipped 1xx leaves it in `Head` for the next one).
    fn parse_head<S: BodySink>(
        &mut self,
        input: &[u8],
        pos: &mut usize,
        sink: &mut S,
    ) -> Result<bool, ParseError> {
        if self.head_scanned == 0 {
            // Stray blank lines before a status line are tolerated (RFC 9112 §2.2) and do
            // not count as the start of a response, so an idle close after them is clean.
            while *pos < input.len() && matches!(input[*pos], b'\r' | b'\n') {
                *pos += 1;
            }
        }
        let rest = &input[*pos..];
        if rest.is_empty() {
            return Ok(false);
        }
        self.started = true;
        // Bounding the slice bounds the work per call and makes the size limit independent
        // of how the input happened to be split.
        let buf = &rest[..rest.len().min(MAX_HEAD)];
        // Bytes that extend a field value cannot complete the head nor make it invalid:
        // skip parsing it all again. Anything else is parsed, so that the outcome never
        // depends on how the head was split.
        if self.head_scanned > 0
            && self.head_in_value
            && buf[self.head_scanned.min(buf.len())..]
                .iter()
                .all(|&b| is_value_byte(b))
        {
            return self.head_incomplete(buf.len());
        }

        // Uninitialised header slots: zeroing 64 of them for every response cost more than
        // parsing a typical head. A head with more fields is parsed again with room for as
        // many as it has lines (rare: only then is anything allocated).
        let mut headers =
            [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
        let parsed = match parse_fields(buf, &mut headers) {
            Err(httparse::Error::TooManyHeaders) => {
                let lines = buf.iter().filter(|&&b| b == b'\n').count() + 1;
                let mut many = Vec::with_capacity(lines);
                many.resize_with(lines, std::mem::MaybeUninit::uninit);
                parse_fields(buf, &mut many)
            }
            other => other,
        };
        let Parsed {
            len: n,
            status,
            http10,
            fields,
        } = match parsed? {
            httparse::Status::Partial => {
                self.head_in_value = in_field_value(buf);
                return self.head_incomplete(buf.len());
            }
            httparse::Status::Complete(parsed) => parsed,
        };
        if status < 100 {
            return Err(ParseError::BadStatus(status));
        }
        *pos += n;
        self.head_scanned = 0;
        if status < 200 {
            if status == 101 {
                return Err(ParseError::UnsupportedUpgrade);
            }
            // Interim response: the final one follows on the same stream.
            return Ok(true);
        }

        let mut keep_alive = if http10 {
            fields.keep_alive && !fields.close
        } else {
            !fields.close
        };
        let body_state = if self.head_request || status == 204 || status == 304 {
            State::Done
        } else {
            match fields.transfer_encoding {
                Some(true) => {
                    // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means faulty framing;
                    // still decode it, but do not reuse the connection.
                    if http10 {
                        keep_alive = false;
                    }
                    self.chunk_size = 0;
                    self.chunk_digits = false;
                    self.line_len = 0;
                    State::Chunked(Chunk::Size)
                }
                Some(false) => State::Close,
                None => match fields.content_length? {
                    Some(0) => State::Done,
                    Some(len) => State::Length(len),
                    None => State::Close,
                },
            }
        };
        if body_state == State::Close {
            keep_alive = false;
        }
        self.head = ResponseHead {
            status,
            keep_alive,
            content_encoding: fields.content_encoding,
        };
        self.has_head = true;
        self.state = body_state;
        sink.on_head(&self.head);
        Ok(true)
    }

    fn head_incomplete(&mut self, scanned: usize) -> Result<bool, ParseError> {
        if scanned >= MAX_HEAD {
            return Err(ParseError::HeadTooLarge);
        }
        self.head_scanned = scanned;
        Ok(false)
    }

    fn line_bytes(&mut self, n: usize) -> Result<(), ParseError> {
        self.line_len += n;
        if self.line_len > MAX_CHUNK_LINE {
            return Err(ParseError::ChunkLineTooLong);
        }
        Ok(())
    }

    fn end_size_line(&mut self) -> Chunk {
        if self.chunk_size == 0 {
            self.line_len = 0;
            Chunk::TrailerStart
        } else {
            Chunk::Data
        }
    }

    fn feed_chunked<S: BodySink>(
        &mut self,
        mut chunk: Chunk,
        input: &[u8],
        mut pos: usize,
        sink: &mut S,
    ) -> Result<Progress, ParseError> {
        // Persist the local state on every exit, including errors (overwritten by Failed).
        let r = self.run_chunked(&mut chunk, input, &mut pos, sink);
        if self.state != State::Done {
            self.state = State::Chunked(chunk);
        }
        r
    }

    fn run_chunked<S: BodySink>(
        &mut self,
        chunk: &mut Chunk,
        input: &[u8],
        pos: &mut usize,
        sink: &mut S,
    ) -> Result<Progress, ParseError> {
        while *pos < input.len() {
            match *chunk {
                Chunk::Data => {
                    let n = self.chunk_size.min((input.len() - *pos) as u64) as usize;
                    sink.on_body(&input[*pos..*pos + n]);
                    *pos += n;
                    self.chunk_size -= n as u64;
                    if self.chunk_size == 0 {
                        *chunk = Chunk::DataCr;
                    }
                    continue;
                }
                Chunk::Ext | Chunk::Trailer => {
                    // Chunk extensions (including quoted strings, which cannot hold CR or LF)
                    // and trailer fields are skipped wholesale, not interpreted; only the
                    // line end matters.
                    let rest = &input[*pos..];
                    match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
                        Some(i) => {
                            self.line_bytes(i)?;
                            *pos += i;
                        }
                        None => {
                            self.line_bytes(rest.len())?;
                            *pos = input.len();
                            break;
                        }
                    }
                }
                _ => {}
            }

            let b = input[*pos];
            *pos += 1;
            *chunk = match (*chunk, b) {
                (Chunk::Size, _) if b.is_ascii_hexdigit() => {
                    self.line_bytes(1)?;
                    if self.chunk_size > u64::MAX >> 4 {
                        return Err(ParseError::ChunkSizeOverflow);
                    }
                    self.chunk_size = (self.chunk_size << 4) | hex_value(b);
                    self.chunk_digits = true;
                    Chunk::Size
                }
                (Chunk::Size, _) if !self.chunk_digits => return Err(ParseError::BadChunkSize),
                (Chunk::Size | Chunk::SizeWs, b' ' | b'\t') => {
                    self.line_bytes(1)?;
                    Chunk::SizeWs
                }
                (Chunk::Size | Chunk::SizeWs, b';') => {
                    self.line_bytes(1)?;
                    Chunk::Ext
                }
                (Chunk::Size | Chunk::SizeWs | Chunk::Ext, b'\r') => Chunk::SizeLf,
                (Chunk::Size | Chunk::SizeWs | Chunk::Ext | Chunk::SizeLf, b'\n') => {
                    self.end_size_line()
                }
                (Chunk::Size | Chunk::SizeWs, _) => return Err(ParseError::BadChunkSize),
                (Chunk::DataCr, b'\r') => Chunk::DataLf,
                (Chunk::DataCr | Chunk::DataLf, b'\n') => {
                    self.chunk_size = 0;
                    self.chunk_digits = false;
                    self.line_len = 0;
                    Chunk::Size
                }
                (Chunk::TrailerStart, b'\r') => Chunk::FinalLf,
                (Chunk::TrailerStart | Chunk::FinalLf, b'\n') => {
                    self.state = State::Done;
                    return Ok(self.complete(*pos));
                }
                (Chunk::TrailerStart, _) => {
                    self.line_bytes(1)?;
                    Chunk::Trailer
                }
                (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
                (Chunk::Trailer | Chunk::TrailerLf, b'\n') => {
                    self.line_len = 0;
                    Chunk::TrailerStart
                }
                _ => return Err(ParseError::BadChunkFraming),
            };
        }
        Ok(Progress::Partial { consumed: *pos })
    }
}

/// What httparse found in a complete head.
struct Parsed {
    len: usize,
    status: u16,
    http10: bool,
    fields: Fields,
}

/// Parse a head with room for `headers.len()` fields. Obsolete line folding is accepted
/// (RFC 9112 section 5.2); `trim_ows` treats the folds as the spaces they stand for.
fn parse_fields<'b>(
    buf: &'b [u8],
    headers: &mut [std::mem::MaybeUninit<httparse::Header<'b>>],
) -> Result<httparse::Status<Parsed>, httparse::Error> {
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .allow_obsolete_multiline_headers_in_responses(true)
        .parse_response_with_uninit_headers(&mut resp, buf, headers)?;
    Ok(match parsed {
        httparse::Status::Partial => httparse::Status::Partial,
        // Complete implies httparse has set code and version; the defaults are unreachable.
        httparse::Status::Complete(len) => httparse::Status::Complete(Parsed {
            len,
            status: resp.code.unwrap_or(0),
            http10: resp.version == Some(0),
            fields: scan_fields(resp.headers),
        }),
    })
}

/// A byte httparse accepts anywhere in a field value (not CR or LF).
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=0x7e).contains(&b) || b >= 0x80
}

/// `head`, a valid but incomplete head, ends inside a field value: its last line follows
/// the status line, is not a folded continuation, holds the name's colon and does not end
/// in the CR of a line end.
fn in_field_value(head: &[u8]) -> bool {
    let Some(lf) = head.iter().rposition(|&b| b == b'\n') else {
        return false;
    };
    match &head[lf + 1..] {
        [] | [b' ' | b'\t', ..] | [.., b'\r'] => false,
        line => line.contains(&b':'),
    }
}

fn hex_value(b: u8) -> u64 {
    match b {
        b'0'..=b'9' => (b - b'0') as u64,
        b'a'..=b'f' => (b - b'a' + 10) as u64,
        _ => (b - b'A' + 10) as u64,
    }
}

/// Without surrounding whitespace, including obs-fold line ends (CR LF before a space).
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r' | b'\n', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r' | b'\n'] = s {
        s = rest;
    }
    s
}

/// Comma-separated list elements with surrounding whitespace removed; empty ones skipped
/// (RFC 9110 §5.6.1 list syntax).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// `s` equals `lower`, a lowercase word of letters and '-', ignoring ASCII case. Setting
/// bit 0x20 lowercases a letter and leaves '-' alone; the only other byte it maps onto one
/// of those is CR (to '-'), which httparse admits in a value only in an obs-fold, always
/// followed by LF (which maps to '*', no letter), so a folded token never matches.
/// One OR per byte, where `eq_ignore_ascii_case` lowercases both sides of every byte: this
/// runs for several fields of every response.
fn is_word(s: &[u8], lower: &[u8]) -> bool {
    debug_assert!(lower.iter().all(|&b| b.is_ascii_lowercase() || b == b'-'));
    s.len() == lower.len() && s.iter().zip(lower).all(|(&a, &b)| a | 0x20 == b)
}

fn scan_fields(headers: &[httparse::Header<'_>]) -> Fields {
    let mut f = Fields {
        close: false,
        keep_alive: false,
        transfer_encoding: None,
        content_length: Ok(None),
        content_encoding: ContentEncoding::Identity,
    };
    for h in headers {
        let name = h.name.as_bytes();
        if is_word(name, b"content-length") {
            if let Ok(current) = f.content_length {
                f.content_length = merge_content_length(h.value, current);
            }
        } else if is_word(name, b"transfer-encoding") {
            // Only the final coding decides the framing; a later field line continues the
            // list of an earlier one. An empty field is ignored rather than guessed at.
            if let Some(last) = list_elements(h.value).last() {
                let coding = last.split(|&b| b == b';').next().unwrap_or(&[]);
                f.transfer_encoding = Some(is_word(trim_ows(coding), b"chunked"));
            }
        } else if is_word(name, b"content-encoding") {
            f.content_encoding = ContentEncoding::parse(h.value);
        } else if is_word(name, b"connection") {
            for token in list_elements(h.value) {
                if is_word(token, b"close") {
                    f.close = true;
                } else if is_word(token, b"keep-alive") {
                    f.keep_alive = true;
                }
            }
        }
    }
    f
}

/// Folds one Content-Length field value (possibly a list from merged field lines) into the
/// value seen so far. Identical repeats are accepted (RFC 9112 §6.3 item 5).
fn merge_content_length(value: &[u8], mut current: Option<u64>) -> Result<Option<u64>, ParseError> {
    for part in value.split(|&b| b == b',') {
        let part = trim_ows(part);
        if part.is_empty() {
            return Err(ParseError::BadContentLength);
        }
        let mut n: u64 = 0;
        for &b in part {
            if !b.is_ascii_digit() {
                return Err(ParseError::BadContentLength);
            }
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add((b - b'0') as u64))
                .ok_or(ParseError::BadContentLength)?;
        }
        match current {
            Some(prev) if prev != n => return Err(ParseError::ConflictingContentLength),
            _ => current = Some(n),
        }
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Debug)]
    struct Collect {
        heads: Vec<ResponseHead>,
        body: Vec<u8>,
        body_calls: usize,
    }

    impl BodySink for Collect {
        fn on_head(&mut self, head: &ResponseHead) {
            self.heads.push(*head);
        }
        fn on_body(&mut self, data: &[u8]) {
            self.body.extend_from_slice(data);
            self.body_calls += 1;
        }
    }

    #[derive(Debug, PartialEq, Eq)]
    struct Outcome {
        head: ResponseHead,
        body: Vec<u8>,
        /// Bytes left after the response completed (the next pipelined response).
        rest: Vec<u8>,
    }

    /// Mimics the connection loop: keeps unconsumed bytes, appends each new piece, calls
    /// `on_eof` after the last piece when `eof` is set, and stops at the first complete
    /// response. Running out of input without a complete response is reported as
    /// `UnexpectedEof` too.
    fn drive(pieces: &[&[u8]], head_request: bool, eof: bool) -> Result<Outcome, ParseError> {
        let mut p = ResponseParser::new();
        p.reset(head_request);
        let mut sink = Collect::default();
        let mut buf: Vec<u8> = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            buf.extend_from_slice(piece);
            match p.feed(&buf, &mut sink)? {
                Progress::Partial { consumed } => {
                    assert!(consumed <= buf.len());
                    buf.drain(..consumed);
                }
                Progress::Complete { consumed, head } => {
                    assert!(consumed <= buf.len());
                    assert!(!p.in_progress());
                    let mut rest = buf[consumed..].to_vec();
                    for later in &pieces[i + 1..] {
                        rest.extend_from_slice(later);
                    }
                    assert_eq!(sink.heads, vec![head]);
                    return Ok(Outcome {
                        head,
                        body: sink.body,
                        rest,
                    });
                }
            }
        }
        if eof {
            if let Some(head) = p.on_eof(&mut sink)? {
                assert_eq!(sink.heads, vec![head]);
                return Ok(Outcome {
                    head,
                    body: sink.body,
                    rest: buf,
                });
            }
        }
        Err(ParseError::UnexpectedEof)
    }

    /// Checks `response` (followed by `next`, the start of a pipelined response) whole,
    /// split in two at every byte boundary, split in three at a spread of boundaries,
    /// and fed byte by byte.
    fn check_all_splits(
        response: &[u8],
        next: &[u8],
        head_request: bool,
        eof: bool,
        head: ResponseHead,
        body: &[u8],
    ) {
        let mut full = response.to_vec();
        full.extend_from_slice(next);
        let expected = Outcome {
            head,
            body: body.to_vec(),
            rest: next.to_vec(),
        };
        let check = |pieces: &[&[u8]], what: &str| {
            let got = drive(pieces, head_request, eof);
            assert_eq!(got.as_ref(), Ok(&expected), "{what}");
        };
        check(&[&full], "whole");
        for i in 0..=full.len() {
            check(&[&full[..i], &full[i..]], &format!("split at {i}"));
        }
        let step = (full.len() / 23).max(1);
        for i in (0..=full.len()).step_by(step) {
            for j in (i..=full.len()).step_by(step) {
                check(
                    &[&full[..i], &full[i..j], &full[j..]],
                    &format!("split at {i},{j}"),
                );
            }
        }
        let bytes: Vec<&[u8]> = full.chunks(1).collect();
        check(&bytes, "byte by byte");
    }

    fn head(status: u16, keep_alive: bool) -> ResponseHead {
        ResponseHead {
            status,
            keep_alive,
            content_encoding: ContentEncoding::Identity,
        }
    }

    const NEXT: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";

    #[test]
    fn content_length() {
        check_all_splits(
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-A: b\r\n\r\nhello world",
            NEXT,
            false,
            false,
            head(200, true),
            b"hello world",
        );
    }

    #[test]
    fn field_names_and_tokens_in_any_case() {
        for name in ["content-length", "CONTENT-LENGTH", "cOnTeNt-LeNgTh"] {
            let input =
                format!("HTTP/1.1 200 OK\r\n{name}: 2\r\nConnection: KEEP-alive, cLoSe\r\n\r\nab");
            check_all_splits(
                input.as_bytes(),
                NEXT,
                false,
                false,
                head(200, false),
                b"ab",
            );
        }
        for name in ["transfer-encoding", "TRANSFER-encoding"] {
            let input = format!("HTTP/1.1 200 OK\r\n{name}: ChUnKeD\r\n\r\n2\r\nab\r\n0\r\n\r\n");
            check_all_splits(input.as_bytes(), NEXT, false, false, head(200, true), b"ab");
        }
        // Near misses are other fields: no framing, so the body runs to the close.
        for name in [
            "content_length",
            "content-lengtx",
            "content-lengt",
            "xontent-length",
        ] {
            let input = format!("HTTP/1.1 200 OK\r\n{name}: 2\r\n\r\nab");
            let mut sink = Collect::default();
            let mut p = ResponseParser::new();
            assert_eq!(
                p.feed(input.as_bytes(), &mut sink),
                Ok(Progress::Partial {
                    consumed: input.len()
                }),
                "{name}"
            );
            assert_eq!(p.on_eof(&mut sink), Ok(Some(head(200, false))), "{name}");
            assert_eq!(sink.body, b"ab", "{name}");
        }
        assert!(is_word(b"Keep-Alive", b"keep-alive"));
        assert!(!is_word(b"keep-alive ", b"keep-alive"));
        assert!(!is_word(b"keep_alive", b"keep-alive"));
    }

    #[test]
    fn content_length_zero_and_repeated_values() {
        check_all_splits(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            NEXT,
            false,
            false,
            head(200, true),
            b"",
        );
        check_all_splits(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\ncontent-length: 4 , 4\r\n\r\nabcd",
            NEXT,
            false,
            false,
            head(200, true),
            b"abcd",
        );
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        check_all_splits(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n\
              1;name=value\r\n \r\n\
              A ;q=\"quoted ; \\\" value\"\r\n0123456789\r\n\
              00b\t;x\r\nabcdefghijk\r\n\
              0;last\r\nTrailer-A: 1\r\nTrailer-B: two\r\n\r\n",
            NEXT,
            false,
            false,
            head(200, true),
            b"hello 0123456789abcdefghijk",
        );
    }

    #[test]
    fn chunked_minimal_and_bare_lf() {
        check_all_splits(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            NEXT,
            false,
            false,
            head(200, true),
            b"",
        );
        check_all_splits(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\nT: x\n\n",
            NEXT,
            false,
            false,
            head(200, true),
            b"abc",
        );
    }

    #[test]
    fn chunked_case_and_coding_lists() {
        check_all_splits(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, CHUNKED\r\nContent-Length: 99\r\n\r\n\
              1f\r\n0123456789abcdef0123456789abcde\r\n0\r\n\r\n",
            NEXT,
            false,
            false,
            head(200, true),
            b"0123456789abcdef0123456789abcde",
        );
        // A second field line continues the list.
        check_all_splits(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n\
              2\r\nhi\r\n0\r\n\r\n",
            NEXT,
            false,
            false,
            head(200, true),
            b"hi",
        );
    }

    #[test]
    fn transfer_encoding_not_chunked_is_close_delimited() {
        check_all_splits(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\nContent-Length: 2\r\n\r\nabcdef",
            b"",
            false,
            true,
            head(200, false),
            b"abcdef",
        );
    }

    #[test]
    fn close_delimited() {
        check_all_splits(
            b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nuntil the end\r\n\r\n",
            b"",
            false,
            true,
            head(200, false),
            b"until the end\r\n\r\n",
        );
        check_all_splits(
            b"HTTP/1.0 200 OK\r\n\r\n",
            b"",
            false,
            true,
            head(200, false),
            b"",
        );
    }

    #[test]
    fn head_request_has_no_body() {
        check_all_splits(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
            NEXT,
            true,
            false,
            head(200, true),
            b"",
        );
        check_all_splits(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            NEXT,
            true,
            false,
            head(200, true),
            b"",
        );
    }

    #[test]
    fn no_body_statuses() {
        check_all_splits(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
            NEXT,
            false,
            false,
            head(204, true),
            b"",
        );
        check_all_splits(
            b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
            NEXT,
            false,
            false,
            head(304, true),
            b"",
        );
    }

    #[test]
    fn informational_responses_are_skipped() {
        check_all_splits(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n\
              HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            NEXT,
            false,
            false,
            head(200, true),
            b"ok",
        );
        // Only the final head reaches the sink (asserted inside `drive`), and the interim
        // head is consumed even when the final one has not arrived yet.
        let mut p = ResponseParser::new();
        let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2";
        assert_eq!(
            p.feed(input, &mut ()),
            Ok(Progress::Partial { consumed: 25 })
        );
        assert!(p.in_progress());
        assert_eq!(p.on_eof(&mut ()), Err(ParseError::UnexpectedEof));
    }

    /// Issue 12: the head names the body's Content-Encoding for the LLM body path.
    #[test]
    fn content_encoding_is_named_in_the_head() {
        let encoding = |field: &str| {
            let resp = format!("HTTP/1.1 200 OK\r\n{field}Content-Length: 0\r\n\r\n");
            let mut p = ResponseParser::new();
            match p.feed(resp.as_bytes(), &mut ()) {
                Ok(Progress::Complete { head, .. }) => head.content_encoding,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(encoding(""), ContentEncoding::Identity);
        assert_eq!(
            encoding("Content-Encoding: identity\r\n"),
            ContentEncoding::Identity
        );
        assert_eq!(
            encoding("Content-Encoding: GZIP\r\n"),
            ContentEncoding::Gzip
        );
        assert_eq!(
            encoding("content-encoding: x-gzip\r\n"),
            ContentEncoding::Gzip
        );
        assert_eq!(
            encoding("Content-Encoding: deflate\r\n"),
            ContentEncoding::Deflate
        );
        for other in ["br", "gzip, br"] {
            match encoding(&format!("Content-Encoding: {other}\r\n")) {
                ContentEncoding::Other(name) => assert_eq!(name.as_str(), other),
                e => panic!("{other}: {e:?}"),
            }
        }
    }

    #[test]
    fn http10_keep_alive_rules() {
        check_all_splits(
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nab",
            NEXT,
            false,
            false,
            head(200, false),
            b"ab",
        );
        check_all_splits(
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nab",
            NEXT,
            false,
            false,
            head(200, true),
            b"ab",
        );
        check_all_splits(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\nab",
            NEXT,
            false,
            false,
            head(200, false),
            b"ab",
        );
        // Keep-alive cannot survive a close-delimited body.
        check_all_splits(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nab",
            b"",
            false,
            true,
            head(200, false),
            b"ab",
        );
        // Transfer-Encoding in HTTP/1.0 is decoded but the connection is not reused.
        check_all_splits(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n\
              2\r\nab\r\n0\r\n\r\n",
            NEXT,
            false,
            false,
            head(200, false),
            b"ab",
        );
    }

    #[test]
    fn connection_close() {
        check_all_splits(
            b"HTTP/1.1 200 OK\r\nConnection: upgrade, CLOSE\r\nContent-Length: 2\r\n\r\nab",
            NEXT,
            false,
            false,
            head(200, false),
            b"ab",
        );
        check_all_splits(
            b"HTTP/1.1 500 Oops\r\nConnection: closed\r\nContent-Length: 0\r\n\r\n",
            NEXT,
            false,
            false,
            head(500, true),
            b"",
        );
    }

    #[test]
    fn head_is_partial_with_nothing_consumed_until_complete() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
        let head_len = full.len() - 1;
        let mut p = ResponseParser::new();
        for i in 1..head_len {
            assert_eq!(
                p.feed(&full[..i], &mut ()),
                Ok(Progress::Partial { consumed: 0 }),
                "{i}"
            );
            assert!(p.in_progress());
        }
        assert_eq!(
            p.feed(&full[..head_len], &mut ()),
            Ok(Progress::Partial { consumed: head_len })
        );
        assert_eq!(
            p.feed(b"x", &mut ()),
            Ok(Progress::Complete {
                consumed: 1,
                head: head(200, true)
            })
        );
        assert_eq!(p.feed(b"", &mut ()), Err(ParseError::NotReset));
    }

    #[test]
    fn body_is_streamed_as_it_arrives() {
        let mut p = ResponseParser::new();
        let mut sink = Collect::default();
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\nabc";
        assert_eq!(
            p.feed(input, &mut sink),
            Ok(Progress::Partial {
                consumed: input.len()
            })
        );
        assert_eq!(sink.body, b"abc");
        assert_eq!(sink.heads, vec![head(200, true)]);
        assert_eq!(
            p.feed(b"de", &mut sink),
            Ok(Progress::Partial { consumed: 2 })
        );
        assert_eq!(sink.body, b"abcde");

        let mut p = ResponseParser::new();
        let mut sink = Collect::default();
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n1234";
        assert_eq!(
            p.feed(input, &mut sink),
            Ok(Progress::Partial {
                consumed: input.len()
            })
        );
        assert_eq!(sink.body, b"1234");
        assert_eq!(sink.body_calls, 1);
    }

    #[test]
    fn eof_handling() {
        let mut p = ResponseParser::new();
        assert!(!p.in_progress());
        assert_eq!(p.on_eof(&mut ()), Ok(None));

        // Stray blank lines between responses do not start a response.
        let mut p = ResponseParser::new();
        assert_eq!(
            p.feed(b"\r\n\r\n", &mut ()),
            Ok(Progress::Partial { consumed: 4 })
        );
        assert!(!p.in_progress());
        assert_eq!(p.on_eof(&mut ()), Ok(None));

        for partial in [
            &b"H"[..],
            b"HTTP/1.1 200 OK\r\nContent-Le",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nTrailer: x\r\n",
        ] {
            let r = drive(&[partial], false, true);
            assert_eq!(r, Err(ParseError::UnexpectedEof), "{partial:?}");
            let mut p = ResponseParser::new();
            let _ = p.feed(partial, &mut ());
            assert!(p.in_progress());
            assert_eq!(p.on_eof(&mut ()), Err(ParseError::UnexpectedEof));
            // Sticky until reset.
            assert_eq!(p.feed(b"x", &mut ()), Err(ParseError::UnexpectedEof));
            p.reset(false);
            assert_eq!(p.on_eof(&mut ()), Ok(None));
        }

        // After a complete response, EOF is a clean close.
        let mut p = ResponseParser::new();
        let r = p.feed(b"HTTP/1.1 204 No Content\r\n\r\n", &mut ());
        assert!(matches!(r, Ok(Progress::Complete { .. })));
        assert_eq!(p.on_eof(&mut ()), Ok(None));
    }

    #[test]
    fn pipelined_mixed_framing() {
        let mut buf = Vec::new();
        let responses: &[(&[u8], bool, ResponseHead, &[u8])] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst",
                false,
                head(200, true),
                b"first",
            ),
            (
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nsec\r\n3\r\nond\r\n0\r\nT: 1\r\n\r\n",
                false,
                head(201, true),
                b"second",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
                true,
                head(200, true),
                b"",
            ),
            (b"HTTP/1.1 204 No Content\r\n\r\n", false, head(204, true), b""),
            (
                b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
                false,
                head(304, true),
                b"",
            ),
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast",
                false,
                head(200, true),
                b"last",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                false,
                head(200, true),
                b"",
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil eof",
                false,
                head(200, false),
                b"until eof",
            ),
        ];
        for (bytes, _, _, _) in responses {
            buf.extend_from_slice(bytes);
        }

        // All in one buffer, and again fed in small reads through a caller-style buffer.
        for read_size in [buf.len(), 7, 1] {
            let mut p = ResponseParser::new();
            let mut pending: Vec<u8> = Vec::new();
            let mut reads = buf.chunks(read_size);
            for (i, &(_, head_request, expected_head, expected_body)) in
                responses.iter().enumerate()
            {
                p.reset(head_request);
                let mut sink = Collect::default();
                let got = loop {
                    match p.feed(&pending, &mut sink).unwrap() {
                        Progress::Complete { consumed, head } => {
                            pending.drain(..consumed);
                            break head;
                        }
                        Progress::Partial { consumed } => {
                            pending.drain(..consumed);
                            match reads.next() {
                                Some(r) => pending.extend_from_slice(r),
                                None => break p.on_eof(&mut sink).unwrap().unwrap(),
                            }
                        }
                    }
                };
                assert_eq!(got, expected_head, "response {i}, reads of {read_size}");
                assert_eq!(
                    sink.body, expected_body,
                    "response {i}, reads of {read_size}"
                );
            }
            assert!(pending.is_empty());
        }
    }

    fn feed_all(input: &[u8], head_request: bool) -> Result<Progress, ParseError> {
        let mut p = ResponseParser::new();
        p.reset(head_request);
        p.feed(input, &mut ())
    }

    /// Every split of `input` must end in `expected` (either from `feed` or from `on_eof`).
    fn assert_error_all_splits(input: &[u8], expected: ParseError) {
        for i in 0..=input.len() {
            let r = drive(&[&input[..i], &input[i..]], false, true);
            assert_eq!(
                r,
                Err(expected),
                "split at {i} of {:?}",
                String::from_utf8_lossy(input)
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(drive(&bytes, false, true), Err(expected), "byte by byte");
    }

    #[test]
    fn malformed_status_line() {
        for bad in [
            &b"GARBAGE\r\n\r\n"[..],
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1\r\n\r\n",
            b"\x00\x01\x02",
        ] {
            assert!(
                matches!(feed_all(bad, false), Err(ParseError::Head(_))),
                "{bad:?}"
            );
            assert!(matches!(
                drive(&[bad], false, true),
                Err(ParseError::Head(_))
            ));
        }
        assert_eq!(
            feed_all(b"HTTP/1.1 099 Weird\r\n\r\n", false),
            Err(ParseError::BadStatus(99))
        );
        assert_eq!(
            feed_all(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", false),
            Err(ParseError::Head(httparse::Error::HeaderName))
        );
    }

    #[test]
    fn switching_protocols_is_unsupported() {
        assert_error_all_splits(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            ParseError::UnsupportedUpgrade,
        );
    }

    const CHUNKED_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";

    fn chunked(body: &[u8]) -> Vec<u8> {
        let mut v = CHUNKED_HEAD.to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn bad_chunk_sizes() {
        for (body, err) in [
            (&b"\r\n"[..], ParseError::BadChunkSize),
            (b";ext\r\n", ParseError::BadChunkSize),
            (b" 5\r\nhello\r\n", ParseError::BadChunkSize),
            (b"g\r\n", ParseError::BadChunkSize),
            (b"5 5\r\n", ParseError::BadChunkSize),
            (b"-5\r\n", ParseError::BadChunkSize),
            (b"0x5\r\n", ParseError::BadChunkSize),
            (b"5\rX", ParseError::BadChunkFraming),
            (b"10000000000000000\r\n", ParseError::ChunkSizeOverflow),
            (b"FFFFFFFFFFFFFFFFF\r\n", ParseError::ChunkSizeOverflow),
        ] {
            assert_error_all_splits(&chunked(body), err);
        }
        // The largest u64 (with leading zeros) is a valid size.
        let r = feed_all(&chunked(b"0000ffffffffffffffff\r\nab"), false);
        assert!(matches!(r, Ok(Progress::Partial { .. })));
    }

    #[test]
    fn bad_chunk_framing() {
        for body in [
            &b"5\r\nhelloX\r\n0\r\n\r\n"[..],
            b"5\r\nhello\rX0\r\n\r\n",
            b"5\r\nhello\r\r\n0\r\n\r\n",
            b"5\r\nhello 0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\rX",
        ] {
            assert_error_all_splits(&chunked(body), ParseError::BadChunkFraming);
        }
    }

    #[test]
    fn long_chunk_lines() {
        let mut ok = b"1;".to_vec();
        ok.resize(MAX_CHUNK_LINE, b'x');
        ok.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
        let r = drive(&[&chunked(&ok)], false, false).unwrap();
        assert_eq!(r.body, b"a");

        let mut long_ext = b"1;".to_vec();
        long_ext.resize(MAX_CHUNK_LINE + 1, b'x');
        long_ext.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
        assert_eq!(
            feed_all(&chunked(&long_ext), false),
            Err(ParseError::ChunkLineTooLong)
        );
        let bytes = chunked(&long_ext);
        let pieces: Vec<&[u8]> = bytes.chunks(100).collect();
        assert_eq!(
            drive(&pieces, false, true),
            Err(ParseError::ChunkLineTooLong)
        );

        let mut zeros = vec![b'0'; MAX_CHUNK_LINE + 1];
        zeros.extend_from_slice(b"1\r\na\r\n0\r\n\r\n");
        assert_eq!(
            feed_all(&chunked(&zeros), false),
            Err(ParseError::ChunkLineTooLong)
        );

        let mut trailer = b"0\r\nX: ".to_vec();
        trailer.resize(MAX_CHUNK_LINE + 10, b'y');
        trailer.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            feed_all(&chunked(&trailer), false),
            Err(ParseError::ChunkLineTooLong)
        );
    }

    #[test]
    fn bad_content_length() {
        for (value, err) in [
            ("abc", ParseError::BadContentLength),
            ("-1", ParseError::BadContentLength),
            ("+1", ParseError::BadContentLength),
            ("1 2", ParseError::BadContentLength),
            ("0x10", ParseError::BadContentLength),
            ("", ParseError::BadContentLength),
            ("5,", ParseError::BadContentLength),
            ("99999999999999999999", ParseError::BadContentLength),
            ("5, 6", ParseError::ConflictingContentLength),
        ] {
            let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {value}\r\n\r\n");
            assert_error_all_splits(resp.as_bytes(), err);
        }
        assert_error_all_splits(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            ParseError::ConflictingContentLength,
        );
        // Irrelevant when the framing does not depend on it.
        for (resp, head_request) in [
            (
                &b"HTTP/1.1 204 No Content\r\nContent-Length: x\r\n\r\n"[..],
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                true,
            ),
        ] {
            assert!(matches!(
                feed_all(resp, head_request),
                Ok(Progress::Complete { .. })
            ));
        }
        let r = feed_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            false,
        );
        assert!(matches!(r, Ok(Progress::Complete { .. })));
    }

    #[test]
    fn any_number_of_fields_within_the_head_limit() {
        for count in [MAX_HEADERS - 1, MAX_HEADERS, MAX_HEADERS + 1, 5000] {
            let mut resp = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..count {
                resp.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
            }
            resp.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
            if count < 100 {
                check_all_splits(&resp, b"HTTP/1.1", false, false, head(200, true), b"ok");
            }
            let r = drive(&[&resp], false, false).unwrap();
            assert_eq!(r.body, b"ok", "{count} fields");
        }
    }

    #[test]
    fn obs_fold_is_unfolded() {
        let resp = b"HTTP/1.1 200 OK\r\nX-Long: a\r\n b\r\nConnection: keep-alive,\r\n\tclose\r\n\
            Content-Length:\r\n 3\r\n\r\nabc";
        check_all_splits(resp, b"", false, false, head(200, false), b"abc");
    }

    /// Found by fuzzing: an invalid byte after a partial head was only noticed at the next
    /// LF, so the outcome depended on how the bytes were split.
    #[test]
    fn invalid_bytes_fail_however_the_head_is_split() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 10\ro"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\ro\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x",
            b"HTTP/1.1 200 OK\r\nX: a\x01b",
            b"HTTP/1.1 200 OK\r\nX: a\x7f",
            b"HTTP/1.1 200 OK\r\nX: a\r\nY",
        ] {
            let whole = drive(&[bad], false, true);
            assert!(
                matches!(whole, Err(ParseError::Head(_))) || bad.ends_with(b"Y"),
                "{whole:?}"
            );
            assert_error_all_splits(bad, whole.unwrap_err());
        }
    }

    #[test]
    fn head_too_large() {
        let mut resp = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        resp.resize(MAX_HEAD + 100, b'a');
        assert_eq!(feed_all(&resp, false), Err(ParseError::HeadTooLarge));
        assert_eq!(
            feed_all(&resp[..MAX_HEAD], false),
            Err(ParseError::HeadTooLarge)
        );
        assert_eq!(
            feed_all(&resp[..MAX_HEAD - 1], false),
            Ok(Progress::Partial { consumed: 0 })
        );
        // Fed in reads by a caller that keeps the incomplete head.
        let pieces: Vec<&[u8]> = resp.chunks(1000).collect();
        assert_eq!(drive(&pieces, false, true), Err(ParseError::HeadTooLarge));

        // A complete head longer than the limit is rejected however it is split.
        let mut complete = resp[..MAX_HEAD].to_vec();
        complete.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(feed_all(&complete, false), Err(ParseError::HeadTooLarge));

        // A head of exactly MAX_HEAD bytes is accepted.
        let mut exact = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        exact.resize(MAX_HEAD - 4, b'a');
        exact.extend_from_slice(b"\r\n\r\nbody");
        let pieces: Vec<&[u8]> = exact.chunks(4096).collect();
        let r = drive(&pieces, false, true).unwrap();
        assert_eq!(r.body, b"body");
    }

    #[test]
    fn errors_are_sticky_until_reset() {
        let mut p = ResponseParser::new();
        let bad = chunked(b"zz\r\n");
        assert_eq!(p.feed(&bad, &mut ()), Err(ParseError::BadChunkSize));
        assert_eq!(p.feed(b"0\r\n\r\n", &mut ()), Err(ParseError::BadChunkSize));
        assert_eq!(p.on_eof(&mut ()), Err(ParseError::BadChunkSize));
        p.reset(false);
        assert!(matches!(
            p.feed(NEXT, &mut ()),
            Ok(Progress::Complete { consumed, .. }) if consumed == NEXT.len()
        ));
    }

    #[test]
    fn error_display() {
        assert_eq!(
            ParseError::Head(httparse::Error::Status).to_string(),
            "malformed response head: invalid response status"
        );
        assert_eq!(
            ParseError::HeadTooLarge.to_string(),
            "response head larger than 65536 bytes"
        );
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Feeds `data` as random-sized reads through a caller-style loop, resetting after each
    /// complete response, until an error or the end. Returns the number of complete responses.
    fn drive_random(rng: &mut XorShift, data: &[u8], head_request: bool) -> usize {
        let mut p = ResponseParser::new();
        p.reset(head_request);
        let mut sink = Collect::default();
        let mut pending: Vec<u8> = Vec::new();
        let mut offset = 0;
        let mut completes = 0;
        // Each iteration consumes a byte, completes a response or appends a read, so this
        // bound only trips on a parser that stops making progress.
        let mut budget = 3 * data.len() + 10;
        loop {
            budget -= 1;
            assert!(budget > 0, "no progress on {data:?}");
            match p.feed(&pending, &mut sink) {
                Err(_) => return completes,
                Ok(Progress::Complete { consumed, .. }) => {
                    assert!(consumed > 0 && consumed <= pending.len());
                    pending.drain(..consumed);
                    completes += 1;
                    p.reset(rng.below(4) == 0);
                }
                Ok(Progress::Partial { consumed }) => {
                    assert!(consumed <= pending.len());
                    pending.drain(..consumed);
                    if offset == data.len() {
                        let eof = p.on_eof(&mut sink);
                        if let Ok(Some(_)) = eof {
                            completes += 1;
                        }
                        return completes;
                    }
                    let n = 1 + rng.below((data.len() - offset).min(64));
                    pending.extend_from_slice(&data[offset..offset + n]);
                    offset += n;
                }
            }
        }
    }

    const STATUS_LINES: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.0 200 OK\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 204 No Content\r\n",
        b"HTTP/1.1 304 Not Modified\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n",
        b"\r\nHTTP/1.1 404 Not Found\r\n",
        b"HTTP/1.1 200\n",
    ];

    const HEADER_LINES: &[&[u8]] = &[
        b"Content-Length: 3\r\n",
        b"Content-Length: 0\r\n",
        b"Content-Length: 3, 3\r\n",
        b"Content-Length: 18446744073709551616\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Connection: close\r\n",
        b"Connection: keep-alive\r\n",
        b"X-Other: value\r\n",
        b"Bad Header\r\n",
    ];

    const BODY_TOKENS: &[&[u8]] = &[
        b"abc",
        b"\r\n",
        b"\n",
        b"\r",
        b"5\r\nhello\r\n",
        b"3;a=\"b;c\"\r\nxyz\r\n",
        b"1 ;x\r\n!\n",
        b"0\r\n\r\n",
        b"0\r\nTrailer: x\r\n\r\n",
        b"0\n\n",
        b"ffffffffffffffff",
        b"fffffffffffffffff\r\n",
        b"Trailer: x\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz",
    ];

    /// Structured random input: mostly response-shaped (status line, headers, blank line,
    /// body-ish tokens, possibly pipelined), then randomly corrupted, so that the parser's
    /// deep states are reached and not only the status-line rejection.
    fn random_input(rng: &mut XorShift) -> Vec<u8> {
        let mut data = Vec::new();
        for _ in 0..1 + rng.below(3) {
            data.extend_from_slice(STATUS_LINES[rng.below(STATUS_LINES.len())]);
            for _ in 0..rng.below(4) {
                data.extend_from_slice(HEADER_LINES[rng.below(HEADER_LINES.len())]);
            }
            if rng.below(8) != 0 {
                data.extend_from_slice(b"\r\n");
            }
            for _ in 0..rng.below(6) {
                data.extend_from_slice(BODY_TOKENS[rng.below(BODY_TOKENS.len())]);
            }
        }
        for _ in 0..rng.below(4) {
            if data.is_empty() {
                break;
            }
            let at = rng.below(data.len());
            match rng.below(3) {
                0 => data[at] = rng.next() as u8,
                1 => {
                    data.remove(at);
                }
                _ => data.insert(at, rng.next() as u8),
            }
        }
        if rng.below(10) == 0 {
            data = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
        }
        data
    }

    #[test]
    fn fuzz_random_inputs_terminate_without_panic() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut completes = 0;
        for _ in 0..5000 {
            let data = random_input(&mut rng);
            let head_request = rng.below(5) == 0;
            completes += drive_random(&mut rng, &data, head_request);
            let mut p = ResponseParser::new();
            p.reset(head_request);
            let _ = p.feed(&data, &mut ());
            let _ = p.on_eof(&mut ());
        }
        // The generator must reach complete responses, not just fail on the first byte.
        assert!(completes > 1000, "{completes}");
    }

    /// Random valid responses (random framing, chunk sizes, extensions, trailers) must decode
    /// to the same body however they are split.
    #[test]
    fn fuzz_valid_responses_roundtrip() {
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        for round in 0..600 {
            let body: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
            let kind = rng.below(3);
            let mut resp = b"HTTP/1.1 200 OK\r\nServer: fuzz\r\n".to_vec();
            match kind {
                0 => {
                    resp.extend_from_slice(
                        format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                    );
                    resp.extend_from_slice(&body);
                }
                1 => {
                    resp.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    let mut rest = &body[..];
                    while !rest.is_empty() {
                        let n = 1 + rng.below(rest.len().min(70));
                        let size = if rng.below(2) == 0 {
                            format!("{n:x}")
                        } else {
                            format!("{n:X}")
                        };
                        resp.extend_from_slice(size.as_bytes());
                        if rng.below(3) == 0 {
                            resp.extend_from_slice(b" ;k=\"v;\\\"\"");
                        }
                        resp.extend_from_slice(b"\r\n");
                        resp.extend_from_slice(&rest[..n]);
                        resp.extend_from_slice(b"\r\n");
                        rest = &rest[n..];
                    }
                    resp.extend_from_slice(b"0\r\n");
                    for t in 0..rng.below(3) {
                        resp.extend_from_slice(format!("T-{t}: x\r\n").as_bytes());
                    }
                    resp.extend_from_slice(b"\r\n");
                }
                _ => {
                    resp.extend_from_slice(b"\r\n");
                    resp.extend_from_slice(&body);
                }
            }
            let close = kind == 2;
            let next: &[u8] = if close { b"" } else { NEXT };
            let mut full = resp.clone();
            full.extend_from_slice(next);
            let mut cuts: Vec<usize> = (0..rng.below(6))
                .map(|_| rng.below(full.len() + 1))
                .collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for c in cuts {
                pieces.push(&full[start..c]);
                start = c;
            }
            pieces.push(&full[start..]);
            let got = drive(&pieces, false, close).unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(got.body, body, "round {round}");
            assert_eq!(got.head, head(200, !close), "round {round}");
            assert_eq!(got.rest, next, "round {round}");
        }
    }
}

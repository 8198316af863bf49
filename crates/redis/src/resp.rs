//! The RESP wire format: an incremental request parser (arrays of bulk strings and inline
//! commands, with limits) and reply values encoded for protocol 2 or 3.

use std::borrow::Cow;
use std::fmt;

/// Bounds on what one request may claim, checked before anything is allocated for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string (Redis's `proto-max-bulk-len`).
    pub max_bulk: usize,
    /// Most elements of one request array.
    pub max_args: usize,
    /// Longest inline command line.
    pub max_inline: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk: 512 * 1024 * 1024,
            max_args: 1024 * 1024,
            max_inline: 64 * 1024,
        }
    }
}

impl Limits {
    /// These limits as they apply to a client that has not authenticated (as Redis: at most 10
    /// arguments and 16 KiB per string), so that an unauthenticated peer cannot make the server
    /// buffer large requests.
    pub fn unauthenticated(self) -> Limits {
        Limits {
            max_bulk: self.max_bulk.min(16 * 1024),
            max_args: self.max_args.min(10),
            max_inline: self.max_inline.min(16 * 1024),
        }
    }
}

/// A request the parser cannot accept; the connection answers it and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A `*` count that is not a number or exceeds the limit.
    #[error("Protocol error: invalid multibulk length")]
    MultibulkLength,
    /// A `$` length that is not a number, negative, or exceeds the limit.
    #[error("Protocol error: invalid bulk length")]
    BulkLength,
    /// An array element that is not a bulk string.
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// An inline line longer than the limit (or a header line that never ends).
    #[error("Protocol error: too big inline request")]
    InlineTooBig,
    /// Quotes that do not close in an inline command.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A bulk string not followed by CRLF.
    #[error("Protocol error: bulk string not terminated by CRLF")]
    BulkTerminator,
    /// A `*` count within the limit, but over what an unauthenticated client may send.
    #[error("Protocol error: unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    /// A `$` length within the limit, but over what an unauthenticated client may send.
    #[error("Protocol error: unauthenticated bulk length")]
    UnauthenticatedBulkLength,
}

/// A request being assembled from bytes as they arrive.
#[derive(Debug, Default)]
pub struct Parser {
    /// The configured limits.
    limits: Limits,
    /// Whether the client authenticated (else [`Limits::unauthenticated`] applies).
    authenticated: bool,
    /// An array whose header was read: elements still expected, elements so far.
    partial: Option<(usize, Vec<Vec<u8>>)>,
}

impl Parser {
    /// A parser enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Parser {
            limits,
            authenticated: true,
            partial: None,
        }
    }

    /// Says whether the client has authenticated; until it has, the next requests are held to
    /// [`Limits::unauthenticated`].
    pub fn set_authenticated(&mut self, yes: bool) {
        self.authenticated = yes;
    }

    fn limits(&self) -> Limits {
        if self.authenticated {
            self.limits
        } else {
            self.limits.unauthenticated()
        }
    }

    /// The next complete request at the front of `buf`, removing the bytes it used (bytes of
    /// an incomplete request are kept, with what was parsed of it, for the next call).
    /// `Ok(None)`: more bytes are needed. Empty requests (`*0`, blank lines) are skipped.
    pub fn next(&mut self, buf: &mut Vec<u8>) -> Result<Option<Vec<Vec<u8>>>, ProtocolError> {
        let mut pos = 0;
        let r = self.parse(buf, &mut pos);
        buf.drain(..pos);
        r
    }

    /// Like [`Parser::next`], reading from `buf[*pos..]` and advancing `pos` past the bytes
    /// used instead of removing them: a pipeline is parsed without moving the bytes after
    /// each request (remove `buf[..pos]` once done).
    pub fn next_at(
        &mut self,
        buf: &[u8],
        pos: &mut usize,
    ) -> Result<Option<Vec<Vec<u8>>>, ProtocolError> {
        self.parse(buf, pos)
    }

    fn parse(
        &mut self,
        buf: &[u8],
        pos: &mut usize,
    ) -> Result<Option<Vec<Vec<u8>>>, ProtocolError> {
        let limits = self.limits();
        loop {
            if self.partial.is_none() {
                let Some(&first) = buf.get(*pos) else {
                    return Ok(None);
                };
                if first != b'*' {
                    let Some(line) = line(buf, *pos, limits.max_inline)? else {
                        return Ok(None);
                    };
                    *pos += line.len() + 1;
                    let args = split_inline(trim_cr(line))?;
                    if args.is_empty() {
                        continue;
                    }
                    return Ok(Some(args));
                }
                let Some(l) = line(buf, *pos, 64).map_err(|_| ProtocolError::MultibulkLength)?
                else {
                    return Ok(None);
                };
                let n = parse_len(&trim_cr(l)[1..]).ok_or(ProtocolError::MultibulkLength)?;
                *pos += l.len() + 1;
                if n > limits.max_args as i64 {
                    return Err(if n <= self.limits.max_args as i64 {
                        ProtocolError::UnauthenticatedMultibulkLength
                    } else {
                        ProtocolError::MultibulkLength
                    });
                }
                if n <= 0 {
                    continue; // Redis ignores empty and null arrays in requests
                }
                let n = n as usize;
                self.partial = Some((n, Vec::with_capacity(n.min(1024))));
            }
            let Some((want, args)) = self.partial.as_mut() else {
                continue;
            };
            while args.len() < *want {
                let Some(&first) = buf.get(*pos) else {
                    return Ok(None);
                };
                if first != b'$' {
                    return Err(ProtocolError::ExpectedBulk(char::from(first)));
                }
                let Some(l) = line(buf, *pos, 64).map_err(|_| ProtocolError::BulkLength)? else {
                    return Ok(None);
                };
                let len = parse_len(&trim_cr(l)[1..]).ok_or(ProtocolError::BulkLength)?;
                if len < 0 || len > self.limits.max_bulk as i64 {
                    return Err(ProtocolError::BulkLength);
                }
                if len > limits.max_bulk as i64 {
                    return Err(ProtocolError::UnauthenticatedBulkLength);
                }
                let len = len as usize;
                let start = *pos + l.len() + 1;
                if buf.len() < start + len + 2 {
                    return Ok(None);
                }
                if &buf[start + len..start + len + 2] != b"\r\n" {
                    return Err(ProtocolError::BulkTerminator);
                }
                args.push(buf[start..start + len].to_vec());
                *pos = start + len + 2;
            }
            let (_, args) = self.partial.take().unwrap_or_default();
            return Ok(Some(args));
        }
    }
}

/// The line starting at `from` up to (not including) its `\n`; `None` if it is incomplete.
fn line(buf: &[u8], from: usize, max: usize) -> Result<Option<&[u8]>, ProtocolError> {
    let rest = &buf[from..];
    match rest.iter().position(|&b| b == b'\n') {
        Some(i) if i > max => Err(ProtocolError::InlineTooBig),
        Some(i) => Ok(Some(&rest[..i])),
        None if rest.len() > max => Err(ProtocolError::InlineTooBig),
        None => Ok(None),
    }
}

fn trim_cr(l: &[u8]) -> &[u8] {
    l.strip_suffix(b"\r").unwrap_or(l)
}

/// A length of a request header, read as Redis reads it (`string2ll`: no `+`, no leading
/// zeros).
fn parse_len(digits: &[u8]) -> Option<i64> {
    crate::command::parse_i64(digits)
}

/// Splits an inline command as `redis-cli` quotes it: words separated by blanks, `"..."`
/// with `\n \r \t \b \a \\ \" \xHH` escapes, `'...'` with `\'`.
pub fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            return Ok(args);
        }
        let mut cur = Vec::new();
        let (mut dq, mut sq) = (false, false);
        loop {
            if dq {
                let Some(&c) = line.get(i) else {
                    return Err(ProtocolError::UnbalancedQuotes);
                };
                if c == b'\\'
                    && line.get(i + 1) == Some(&b'x')
                    && line.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
                    && line.get(i + 3).is_some_and(u8::is_ascii_hexdigit)
                {
                    cur.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                    i += 3;
                } else if c == b'\\' && i + 1 < n {
                    i += 1;
                    cur.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                } else if c == b'"' {
                    closing_quote(line, i)?;
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
            } else if sq {
                let Some(&c) = line.get(i) else {
                    return Err(ProtocolError::UnbalancedQuotes);
                };
                if c == b'\\' && line.get(i + 1) == Some(&b'\'') {
                    i += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    closing_quote(line, i)?;
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
            } else {
                match line.get(i) {
                    None => break,
                    Some(c) if c.is_ascii_whitespace() => break,
                    Some(b'"') => dq = true,
                    Some(b'\'') => sq = true,
                    Some(&c) => cur.push(c),
                }
            }
            i += 1;
        }
        args.push(cur);
    }
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// Encodes `args` as a request (an array of bulk strings), as clients send them.
pub fn encode_request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A reply, encoded for the connection's protocol version.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `+OK` (static text needs no allocation).
    Simple(Cow<'static, str>),
    /// `-ERR ...` (the text includes its code, e.g. `ERR`, `NOAUTH`).
    Error(String),
    /// `:42`.
    Int(i64),
    /// A bulk string.
    Bulk(Vec<u8>),
    /// A missing value (RESP2 `$-1`, RESP3 `_`).
    Nil,
    /// An array.
    Array(Vec<Value>),
    /// A missing array, as EXEC answers a failed WATCH (RESP2 `*-1`, RESP3 `_`).
    NilArray,
    /// A map (RESP2: a flat array of keys and values).
    Map(Vec<(Value, Value)>),
    /// A verbatim text (RESP3 `=`, RESP2 a bulk string).
    Verbatim(String),
}

impl Value {
    /// `+OK`.
    pub fn ok() -> Value {
        Value::Simple("OK".into())
    }

    /// An error reply with `text` (starting with its code).
    pub fn err(text: impl Into<String>) -> Value {
        Value::Error(text.into())
    }

    /// A bulk string of `s`.
    pub fn bulk(s: impl AsRef<[u8]>) -> Value {
        Value::Bulk(s.as_ref().to_vec())
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_))
    }

    /// Appends the encoding for protocol `proto` (2 or 3) to `out`.
    pub fn encode(&self, proto: u8, out: &mut Vec<u8>) {
        use std::io::Write;
        let resp3 = proto >= 3;
        match self {
            Value::Simple(s) => {
                out.push(b'+');
                out.extend(s.bytes().map(no_newline));
                out.extend_from_slice(b"\r\n");
            }
            Value::Error(s) => {
                out.push(b'-');
                out.extend(s.bytes().map(no_newline));
                out.extend_from_slice(b"\r\n");
            }
            Value::Int(i) => {
                let _ = write!(out, ":{i}\r\n");
            }
            Value::Bulk(b) => {
                let _ = write!(out, "${}\r\n", b.len());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Value::Nil if resp3 => out.extend_from_slice(b"_\r\n"),
            Value::Nil => out.extend_from_slice(b"$-1\r\n"),
            Value::NilArray if resp3 => out.extend_from_slice(b"_\r\n"),
            Value::NilArray => out.extend_from_slice(b"*-1\r\n"),
            Value::Array(items) => {
                let _ = write!(out, "*{}\r\n", items.len());
                for v in items {
                    v.encode(proto, out);
                }
            }
            Value::Map(pairs) => {
                if resp3 {
                    let _ = write!(out, "%{}\r\n", pairs.len());
                } else {
                    let _ = write!(out, "*{}\r\n", pairs.len() * 2);
                }
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Value::Verbatim(s) if resp3 => {
                let _ = write!(out, "={}\r\ntxt:", s.len() + 4);
                out.extend_from_slice(s.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Value::Verbatim(s) => Value::Bulk(s.clone().into_bytes()).encode(proto, out),
        }
    }
}

/// Simple strings and errors cannot carry line breaks: Redis turns them into spaces.
fn no_newline(b: u8) -> u8 {
    if b == b'\r' || b == b'\n' { b' ' } else { b }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        self.encode(3, &mut out);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

/// Decodes one reply at the front of `buf` (both protocols), for tests and tools: the value
/// and the bytes it took, or `None` if incomplete or not a reply.
pub fn decode_reply(buf: &[u8]) -> Option<(Value, usize)> {
    let end = buf.iter().position(|&b| b == b'\n')?;
    let head = trim_cr(&buf[..end]);
    let body = std::str::from_utf8(head.get(1..)?).ok()?;
    let mut used = end + 1;
    let v = match head.first()? {
        b'+' => Value::Simple(body.to_owned().into()),
        b'-' => Value::Error(body.into()),
        b':' => Value::Int(body.parse().ok()?),
        b'_' => Value::Nil,
        b'$' | b'=' => {
            let n: i64 = body.parse().ok()?;
            if n < 0 {
                return Some((Value::Nil, used));
            }
            let n = n as usize;
            let data = buf.get(used..used + n)?;
            buf.get(used + n..used + n + 2)?;
            used += n + 2;
            if head[0] == b'=' {
                Value::Verbatim(String::from_utf8_lossy(data.get(4..)?).into_owned())
            } else {
                Value::Bulk(data.to_vec())
            }
        }
        b'*' | b'%' => {
            let n: i64 = body.parse().ok()?;
            if n < 0 {
                return Some((Value::NilArray, used));
            }
            let count = if head[0] == b'%' { n * 2 } else { n };
            let mut items = Vec::new();
            for _ in 0..count {
                let (v, u) = decode_reply(&buf[used..])?;
                used += u;
                items.push(v);
            }
            if head[0] == b'%' {
                let mut pairs = Vec::new();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                Value::Map(pairs)
            } else {
                Value::Array(items)
            }
        }
        _ => return None,
    };
    Some((v, used))
}

/// Checks that the closing quote at `i` is followed by a blank or the end of the line.
fn closing_quote(line: &[u8], i: usize) -> Result<(), ProtocolError> {
    if line.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
        return Err(ProtocolError::UnbalancedQuotes);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(bytes: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut p = Parser::default();
        let mut buf = bytes.to_vec();
        let mut out = Vec::new();
        while let Some(r) = p.next(&mut buf)? {
            out.push(r);
        }
        Ok(out)
    }

    fn args(a: &[&str]) -> Vec<Vec<u8>> {
        a.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn arrays_and_pipelines() {
        let mut bytes = encode_request(&[b"SET", b"k", b"v\r\nx"]);
        bytes.extend(encode_request(&[b"GET", b"k"]));
        assert_eq!(
            parse_all(&bytes).unwrap(),
            vec![args(&["SET", "k", "v\r\nx"]), args(&["GET", "k"])]
        );
    }

    #[test]
    fn partial_frames_complete_byte_by_byte() {
        let bytes = encode_request(&[b"MSET", b"a", b"1", b"bb", b""]);
        let mut p = Parser::default();
        let mut buf = Vec::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.push(*b);
            let r = p.next(&mut buf).unwrap();
            if i + 1 < bytes.len() {
                assert_eq!(r, None, "complete after {} of {} bytes", i + 1, bytes.len());
            } else {
                assert_eq!(r, Some(args(&["MSET", "a", "1", "bb", ""])));
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn inline_commands() {
        assert_eq!(
            parse_all(b"PING\r\nset k \"a b\\n\\x41\" 'it\\'s'\n\r\n  \nGET k\r\n").unwrap(),
            vec![
                args(&["PING"]),
                args(&["set", "k", "a b\nA", "it's"]),
                args(&["GET", "k"])
            ]
        );
        assert_eq!(
            parse_all(b"GET \"k\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(
            parse_all(b"GET \"k\"x\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(parse_all(b"PING").unwrap(), Vec::<Vec<Vec<u8>>>::new());
    }

    #[test]
    fn empty_and_null_arrays_are_skipped() {
        assert_eq!(
            parse_all(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n").unwrap(),
            vec![args(&["PING"])]
        );
    }

    #[test]
    fn limits_and_malformed_lengths() {
        let small = Limits {
            max_bulk: 8,
            max_args: 3,
            max_inline: 16,
        };
        let run = |b: &[u8]| {
            let mut p = Parser::new(small);
            let mut buf = b.to_vec();
            p.next(&mut buf)
        };
        assert_eq!(run(b"*4\r\n"), Err(ProtocolError::MultibulkLength));
        assert_eq!(run(b"*1\r\n$9\r\n"), Err(ProtocolError::BulkLength));
        assert_eq!(run(b"*1\r\n$8\r\n").unwrap(), None);
        assert_eq!(run(b"*1\r\n$-1\r\n"), Err(ProtocolError::BulkLength));
        assert_eq!(run(b"*1\r\n$x\r\n"), Err(ProtocolError::BulkLength));
        assert_eq!(run(b"*zz\r\n"), Err(ProtocolError::MultibulkLength));
        // Lengths are read as Redis reads them: no '+', no leading zeros.
        assert_eq!(run(b"*+1\r\n"), Err(ProtocolError::MultibulkLength));
        assert_eq!(run(b"*01\r\n"), Err(ProtocolError::MultibulkLength));
        assert_eq!(run(b"*1\r\n$+4\r\n"), Err(ProtocolError::BulkLength));
        assert_eq!(run(b"*1\r\n$04\r\n"), Err(ProtocolError::BulkLength));
        assert_eq!(run(b"*1\r\n:1\r\n"), Err(ProtocolError::ExpectedBulk(':')));
        assert_eq!(
            run(b"*1\r\n$1\r\nab\r\n"),
            Err(ProtocolError::BulkTerminator)
        );
        assert_eq!(
            run(b"GET aaaaaaaaaaaaaaaaaaaa"),
            Err(ProtocolError::InlineTooBig)
        );
        assert_eq!(
            run(b"*1\r\n$99999999999999999999999\r\n"),
            Err(ProtocolError::BulkLength)
        );
        // A header line that never ends is refused, not buffered forever.
        assert_eq!(
            run(&[b"*1".as_slice(), &[b'1'; 100]].concat()),
            Err(ProtocolError::MultibulkLength)
        );
    }

    #[test]
    fn replies_encode_per_protocol() {
        let enc = |v: &Value, p| {
            let mut o = Vec::new();
            v.encode(p, &mut o);
            String::from_utf8(o).unwrap()
        };
        assert_eq!(enc(&Value::Nil, 2), "$-1\r\n");
        assert_eq!(enc(&Value::Nil, 3), "_\r\n");
        assert_eq!(enc(&Value::NilArray, 2), "*-1\r\n");
        assert_eq!(enc(&Value::NilArray, 3), "_\r\n");
        let m = Value::Map(vec![(Value::bulk("a"), Value::Int(1))]);
        assert_eq!(enc(&m, 2), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(&m, 3), "%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(&Value::err("ERR a\r\nb"), 2), "-ERR a  b\r\n");
        assert_eq!(enc(&Value::Verbatim("hi".into()), 3), "=6\r\ntxt:hi\r\n");
        assert_eq!(enc(&Value::Verbatim("hi".into()), 2), "$2\r\nhi\r\n");
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            "[a-zA-Z0-9 ]{0,12}".prop_map(|s| Value::Simple(s.into())),
            "[A-Z]{1,6} [a-z ]{0,12}".prop_map(Value::Error),
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bulk),
            Just(Value::Nil),
            Just(Value::NilArray),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn requests_round_trip_in_any_chunking(
            reqs in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 1..6), 1..5),
            cut in 1usize..17,
        ) {
            let mut bytes = Vec::new();
            for r in &reqs {
                let refs: Vec<&[u8]> = r.iter().map(Vec::as_slice).collect();
                bytes.extend(encode_request(&refs));
            }
            // `next` removes each request's bytes; `next_at` (as the server reads) parses at
            // a position and the bytes used are removed once per read, an incomplete request
            // staying half-parsed in between.
            let (mut p, mut q) = (Parser::default(), Parser::default());
            let (mut buf, mut at_buf) = (Vec::new(), Vec::new());
            let (mut got, mut at_got) = (Vec::new(), Vec::new());
            for chunk in bytes.chunks(cut) {
                buf.extend_from_slice(chunk);
                while let Some(r) = p.next(&mut buf).unwrap() {
                    got.push(r);
                }
                at_buf.extend_from_slice(chunk);
                let mut pos = 0;
                while let Some(r) = q.next_at(&at_buf, &mut pos).unwrap() {
                    at_got.push(r);
                }
                at_buf.drain(..pos);
            }
            prop_assert_eq!(&got, &reqs);
            prop_assert_eq!(at_got, reqs);
            prop_assert!(buf.is_empty());
            prop_assert!(at_buf.is_empty());
        }

        #[test]
        fn replies_round_trip_in_resp3(v in value()) {
            let mut out = Vec::new();
            v.encode(3, &mut out);
            let (back, used) = decode_reply(&out).unwrap();
            prop_assert_eq!(used, out.len());
            // RESP3 has one null: a nil array reads back as nil.
            prop_assert_eq!(normalize(back), normalize(v));
        }
    }

    fn normalize(v: Value) -> Value {
        match v {
            Value::NilArray => Value::Nil,
            Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
            Value::Map(m) => Value::Map(
                m.into_iter()
                    .map(|(k, v)| (normalize(k), normalize(v)))
                    .collect(),
            ),
            v => v,
        }
    }
}

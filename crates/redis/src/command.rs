//! The command table: request arguments parsed and validated into a typed [`Command`], with
//! Redis's error texts.

/// What SET does when the key exists or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetCond {
    /// Always.
    Always,
    /// `NX`: only if absent.
    Nx,
    /// `XX`: only if present.
    Xx,
}

/// A command reading or writing keys: runs in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// `GET key`.
    Get(Vec<u8>),
    /// `SET key value [NX|XX] [GET]`.
    Set {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// NX / XX.
        cond: SetCond,
        /// Reply with the old value.
        get: bool,
    },
    /// `DEL key...`.
    Del(Vec<Vec<u8>>),
    /// `EXISTS key...`.
    Exists(Vec<Vec<u8>>),
    /// `MGET key...`.
    MGet(Vec<Vec<u8>>),
    /// `MSET key value...`.
    MSet(Vec<(Vec<u8>, Vec<u8>)>),
    /// `INCR`, `INCRBY`, `DECR`, `DECRBY`.
    IncrBy(Vec<u8>, i64),
    /// `APPEND key value`.
    Append(Vec<u8>, Vec<u8>),
    /// `STRLEN key`.
    Strlen(Vec<u8>),
    /// `GETSET key value`.
    GetSet(Vec<u8>, Vec<u8>),
    /// `GETDEL key`.
    GetDel(Vec<u8>),
    /// `SCAN cursor [MATCH pattern] [COUNT n]`.
    Scan {
        /// The cursor (0: start).
        cursor: u64,
        /// MATCH.
        pattern: Option<Vec<u8>>,
        /// COUNT: keys examined.
        count: usize,
    },
}

impl Data {
    /// The keys it reads or writes, in its arguments' order; `None` for SCAN, which walks
    /// the whole key space.
    pub fn keys(&self) -> Option<Vec<&[u8]>> {
        Some(match self {
            Data::Get(k)
            | Data::Set { key: k, .. }
            | Data::IncrBy(k, _)
            | Data::Append(k, _)
            | Data::Strlen(k)
            | Data::GetSet(k, _)
            | Data::GetDel(k) => vec![k.as_slice()],
            Data::Del(ks) | Data::Exists(ks) | Data::MGet(ks) => {
                ks.iter().map(Vec::as_slice).collect()
            }
            Data::MSet(kvs) => kvs.iter().map(|(k, _)| k.as_slice()).collect(),
            Data::Scan { .. } => return None,
        })
    }
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Reads or writes keys.
    Data(Data),
    /// `PING [message]`.
    Ping(Option<Vec<u8>>),
    /// `ECHO message`.
    Echo(Vec<u8>),
    /// `INFO [section...]`.
    Info(Vec<String>),
    /// `CONFIG GET parameter...`.
    ConfigGet(Vec<Vec<u8>>),
    /// `CONFIG SET` / `CONFIG RESETSTAT` / `CONFIG REWRITE`: refused.
    ConfigOther(String),
    /// `SELECT db`.
    Select(i64),
    /// `QUIT`.
    Quit,
    /// `COMMAND` with its subcommand (`None`: the bare command), arguments.
    Command(Option<String>, Vec<Vec<u8>>),
    /// `CLIENT SETNAME name`.
    ClientSetName(Vec<u8>),
    /// `CLIENT GETNAME`.
    ClientGetName,
    /// `CLIENT ID`.
    ClientId,
    /// `CLIENT SETINFO ...` and other harmless CLIENT subcommands answered OK.
    ClientOk,
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
    Hello {
        /// The protocol asked for.
        proto: Option<i64>,
        /// `AUTH user pass`.
        auth: Option<(Vec<u8>, Vec<u8>)>,
        /// `SETNAME name`.
        setname: Option<Vec<u8>>,
    },
    /// `AUTH [user] password`.
    Auth(Option<Vec<u8>>, Vec<u8>),
    /// `MULTI`.
    Multi,
    /// `EXEC`.
    Exec,
    /// `DISCARD`.
    Discard,
    /// `WATCH key...`.
    Watch(Vec<Vec<u8>>),
    /// `UNWATCH`.
    Unwatch,
}

/// Names and arities (Redis's convention: `n` exactly `n` words, `-n` at least `n`).
pub const TABLE: &[(&str, i32)] = &[
    ("get", 2),
    ("set", -3),
    ("del", -2),
    ("exists", -2),
    ("mget", -2),
    ("mset", -3),
    ("incr", 2),
    ("incrby", 3),
    ("decr", 2),
    ("decrby", 3),
    ("append", 3),
    ("strlen", 2),
    ("getset", 3),
    ("getdel", 2),
    ("scan", -2),
    ("ping", -1),
    ("echo", 2),
    ("info", -1),
    ("config", -2),
    ("select", 2),
    ("quit", -1),
    ("command", -1),
    ("client", -2),
    ("hello", -1),
    ("auth", -2),
    ("multi", 1),
    ("exec", 1),
    ("discard", 1),
    ("watch", -2),
    ("unwatch", 1),
];

/// What `COMMAND INFO` says of a command besides its arity: flags, and where its keys are
/// (first, last, step; last `-1`: the last argument), as cluster-aware clients read them.
pub fn describe(name: &str) -> (&'static [&'static str], (i64, i64, i64)) {
    const READ: &[&str] = &["readonly", "fast"];
    const WRITE: &[&str] = &["write", "denyoom", "fast"];
    const OTHER: &[&str] = &["fast"];
    match name {
        "get" | "strlen" => (READ, (1, 1, 1)),
        "exists" | "mget" => (READ, (1, -1, 1)),
        "set" | "incr" | "incrby" | "decr" | "decrby" | "append" | "getset" | "getdel" => {
            (WRITE, (1, 1, 1))
        }
        "del" => (&["write"], (1, -1, 1)),
        "mset" => (&["write", "denyoom"], (1, -1, 2)),
        "watch" => (OTHER, (1, -1, 1)),
        "scan" => (&["readonly"], (0, 0, 0)),
        _ => (OTHER, (0, 0, 0)),
    }
}

/// `ERR syntax error`.
pub const SYNTAX: &str = "ERR syntax error";
/// `ERR value is not an integer or out of range`.
pub const NOT_INT: &str = "ERR value is not an integer or out of range";

/// The error text of an unknown command `args`.
pub fn unknown_command(args: &[Vec<u8>]) -> String {
    let mut rest = String::new();
    for a in args.iter().skip(1) {
        if rest.len() >= 128 {
            break;
        }
        let room = 128 - rest.len();
        let s = String::from_utf8_lossy(a);
        let s: String = s.chars().take(room).collect();
        rest.push_str(&format!("'{s}' "));
    }
    let name: String = String::from_utf8_lossy(&args[0])
        .chars()
        .take(128)
        .collect();
    format!("ERR unknown command '{name}', with args beginning with: {rest}")
}

fn arity_error(name: &str) -> String {
    format!("ERR wrong number of arguments for '{name}' command")
}

/// A decimal `i64` as Redis reads one (its `string2ll`): an optional `-`, then `0` alone or
/// digits without a leading zero; no `+`, no blanks, no `-0`, nothing out of range.
pub fn parse_i64(a: &[u8]) -> Option<i64> {
    let (negative, digits) = match a.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, a),
    };
    match digits {
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    // Accumulated negatively, so that `i64::MIN` fits.
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if negative { Some(n) } else { n.checked_neg() }
}

/// Moves an argument out (a request's arguments are not used again once parsed).
fn take(a: &mut Vec<u8>) -> Vec<u8> {
    std::mem::take(a)
}

/// Moves every argument out.
fn take_all(a: &mut [Vec<u8>]) -> Vec<Vec<u8>> {
    a.iter_mut().map(take).collect()
}

fn int(a: &[u8]) -> Result<i64, String> {
    parse_i64(a).ok_or_else(|| NOT_INT.to_string())
}

/// Parses a request. `Err` is the error reply's text; an unknown command or a wrong number
/// of arguments is [`ParseError::Rejected`] (it fails a MULTI block), other errors are
/// [`ParseError::Invalid`].
///
/// The arguments are taken: a data command keeps its keys and values without copying them.
pub fn parse(mut args: Vec<Vec<u8>>) -> Result<Command, ParseError> {
    let Some(first) = args.first() else {
        return Err(ParseError::Rejected(unknown_command(&[Vec::new()])));
    };
    let Some(&(name, arity)) = TABLE
        .iter()
        .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(first))
    else {
        return Err(ParseError::Rejected(unknown_command(&args)));
    };
    let n = args.len() as i32;
    if (arity > 0 && n != arity) || (arity < 0 && n < -arity) {
        return Err(ParseError::Rejected(arity_error(name)));
    }
    let a = &mut args[1..];
    let data = |d| Ok(Command::Data(d));
    match name {
        "get" => data(Data::Get(take(&mut a[0]))),
        "set" => parse_set(a),
        "del" => data(Data::Del(take_all(a))),
        "exists" => data(Data::Exists(take_all(a))),
        "mget" => data(Data::MGet(take_all(a))),
        "mset" => {
            if a.len() & 1 != 0 {
                return Err(ParseError::Rejected(arity_error(name)));
            }
            data(Data::MSet(
                a.chunks_mut(2)
                    .map(|c| (take(&mut c[0]), take(&mut c[1])))
                    .collect(),
            ))
        }
        "incr" => data(Data::IncrBy(take(&mut a[0]), 1)),
        "decr" => data(Data::IncrBy(take(&mut a[0]), -1)),
        "incrby" => {
            let by = int(&a[1]).map_err(ParseError::Invalid)?;
            data(Data::IncrBy(take(&mut a[0]), by))
        }
        "decrby" => {
            let by = int(&a[1]).map_err(ParseError::Invalid)?;
            let by = by
                .checked_neg()
                .ok_or_else(|| ParseError::Invalid("ERR decrement would overflow".to_string()))?;
            data(Data::IncrBy(take(&mut a[0]), by))
        }
        "append" => data(Data::Append(take(&mut a[0]), take(&mut a[1]))),
        "strlen" => data(Data::Strlen(take(&mut a[0]))),
        "getset" => data(Data::GetSet(take(&mut a[0]), take(&mut a[1]))),
        "getdel" => data(Data::GetDel(take(&mut a[0]))),
        "scan" => parse_scan(a),
        "ping" => match a.len() {
            0 => Ok(Command::Ping(None)),
            1 => Ok(Command::Ping(Some(a[0].clone()))),
            _ => Err(ParseError::Rejected(arity_error(name))),
        },
        "echo" => Ok(Command::Echo(a[0].clone())),
        "info" => Ok(Command::Info(
            a.iter()
                .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
                .collect(),
        )),
        "config" => {
            let sub = String::from_utf8_lossy(&a[0]).to_ascii_lowercase();
            match sub.as_str() {
                "get" if a.len() >= 2 => Ok(Command::ConfigGet(a[1..].to_vec())),
                "get" => Err(ParseError::Rejected(arity_error("config|get"))),
                "set" | "resetstat" | "rewrite" => Ok(Command::ConfigOther(sub)),
                _ => Err(ParseError::Invalid(format!(
                    "ERR unknown subcommand '{}'. Try CONFIG HELP.",
                    String::from_utf8_lossy(&a[0])
                ))),
            }
        }
        "select" => Ok(Command::Select(int(&a[0]).map_err(ParseError::Invalid)?)),
        "quit" => Ok(Command::Quit),
        "command" => Ok(Command::Command(
            a.first().map(|s| String::from_utf8_lossy(s).into_owned()),
            a.get(1..).map(<[Vec<u8>]>::to_vec).unwrap_or_default(),
        )),
        "client" => {
            let sub = String::from_utf8_lossy(&a[0]).to_ascii_lowercase();
            match (sub.as_str(), a.len()) {
                ("setname", 2) => Ok(Command::ClientSetName(a[1].clone())),
                ("getname", 1) => Ok(Command::ClientGetName),
                ("id", 1) => Ok(Command::ClientId),
                ("setinfo", 3) => Ok(Command::ClientOk),
                ("setname" | "getname" | "id" | "setinfo", _) => {
                    Err(ParseError::Rejected(arity_error(&format!("client|{sub}"))))
                }
                _ => Err(ParseError::Invalid(format!(
                    "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                    String::from_utf8_lossy(&a[0])
                ))),
            }
        }
        "hello" => parse_hello(a),
        "auth" => match a.len() {
            1 => Ok(Command::Auth(None, a[0].clone())),
            2 => Ok(Command::Auth(Some(a[0].clone()), a[1].clone())),
            _ => Err(ParseError::Invalid(SYNTAX.into())),
        },
        "multi" => Ok(Command::Multi),
        "exec" => Ok(Command::Exec),
        "discard" => Ok(Command::Discard),
        "watch" => Ok(Command::Watch(a.to_vec())),
        "unwatch" => Ok(Command::Unwatch),
        _ => Err(ParseError::Rejected(unknown_command(&args))),
    }
}

/// Why a request is not a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Unknown command or wrong number of arguments (fails a MULTI block like Redis).
    Rejected(String),
    /// Bad arguments found by the command itself (replied, also fails a MULTI block here).
    Invalid(String),
}

impl ParseError {
    /// The error reply's text.
    pub fn text(&self) -> &str {
        match self {
            ParseError::Rejected(t) | ParseError::Invalid(t) => t,
        }
    }
}

fn parse_set(a: &mut [Vec<u8>]) -> Result<Command, ParseError> {
    let mut cond = SetCond::Always;
    let mut get = false;
    let mut expiry = false;
    let mut i = 2;
    while i < a.len() {
        let opt = String::from_utf8_lossy(&a[i]).to_ascii_uppercase();
        match opt.as_str() {
            // Repeating a flag is allowed (as in Redis); NX with XX is not.
            "NX" if cond != SetCond::Xx => cond = SetCond::Nx,
            "XX" if cond != SetCond::Nx => cond = SetCond::Xx,
            "GET" => get = true,
            "KEEPTTL" if !expiry => expiry = true,
            "EX" | "PX" | "EXAT" | "PXAT" if !expiry && i + 1 < a.len() => {
                expiry = true;
                i += 1;
            }
            _ => return Err(ParseError::Invalid(SYNTAX.into())),
        }
        i += 1;
    }
    if expiry {
        return Err(ParseError::Invalid(
            "ERR key expiry (EX, PX, EXAT, PXAT, KEEPTTL) is not supported by mako-rs: keys do not expire"
                .into(),
        ));
    }
    Ok(Command::Data(Data::Set {
        key: take(&mut a[0]),
        value: take(&mut a[1]),
        cond,
        get,
    }))
}

fn parse_scan(a: &[Vec<u8>]) -> Result<Command, ParseError> {
    let cursor = std::str::from_utf8(&a[0])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| ParseError::Invalid("ERR invalid cursor".into()))?;
    let mut pattern = None;
    let mut count = 10usize;
    let mut i = 1;
    while i < a.len() {
        let opt = String::from_utf8_lossy(&a[i]).to_ascii_uppercase();
        let Some(v) = a.get(i + 1) else {
            return Err(ParseError::Invalid(SYNTAX.into()));
        };
        match opt.as_str() {
            "MATCH" => pattern = Some(v.clone()),
            "COUNT" => {
                let n = int(v).map_err(ParseError::Invalid)?;
                if n < 1 {
                    return Err(ParseError::Invalid(SYNTAX.into()));
                }
                count = usize::try_from(n).unwrap_or(usize::MAX);
            }
            _ => return Err(ParseError::Invalid(SYNTAX.into())),
        }
        i += 2;
    }
    Ok(Command::Data(Data::Scan {
        cursor,
        pattern,
        count,
    }))
}

fn parse_hello(a: &[Vec<u8>]) -> Result<Command, ParseError> {
    let Some(first) = a.first() else {
        return Ok(Command::Hello {
            proto: None,
            auth: None,
            setname: None,
        });
    };
    let proto = parse_i64(first).ok_or_else(|| {
        ParseError::Invalid("ERR Protocol version is not an integer or out of range".into())
    })?;
    let (mut auth, mut setname) = (None, None);
    let mut i = 1;
    while i < a.len() {
        let opt = String::from_utf8_lossy(&a[i]).to_ascii_uppercase();
        match opt.as_str() {
            "AUTH" if i + 2 < a.len() => {
                auth = Some((a[i + 1].clone(), a[i + 2].clone()));
                i += 3;
            }
            "SETNAME" if i + 1 < a.len() => {
                setname = Some(a[i + 1].clone());
                i += 2;
            }
            _ => {
                return Err(ParseError::Invalid(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&a[i])
                )));
            }
        }
    }
    Ok(Command::Hello {
        proto: Some(proto),
        auth,
        setname,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, ParseError> {
        let args: Vec<Vec<u8>> = s.split(' ').map(|w| w.as_bytes().to_vec()).collect();
        parse(args)
    }

    fn err(s: &str) -> String {
        p(s).expect_err(s).text().to_string()
    }

    #[test]
    fn arity_errors_name_the_command_in_lower_case() {
        assert_eq!(
            err("GET"),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            err("get a b"),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            err("MSET a 1 b"),
            "ERR wrong number of arguments for 'mset' command"
        );
        assert_eq!(
            err("ping a b"),
            "ERR wrong number of arguments for 'ping' command"
        );
        assert_eq!(
            err("config get"),
            "ERR wrong number of arguments for 'config|get' command"
        );
        assert!(matches!(p("GET"), Err(ParseError::Rejected(_))));
    }

    #[test]
    fn unknown_commands_quote_their_first_arguments() {
        assert_eq!(
            err("foo a bb"),
            "ERR unknown command 'foo', with args beginning with: 'a' 'bb' "
        );
        assert_eq!(
            err("foo"),
            "ERR unknown command 'foo', with args beginning with: "
        );
        assert!(matches!(p("foo"), Err(ParseError::Rejected(_))));
    }

    #[test]
    fn set_options() {
        let set = |cond, get| {
            Ok(Command::Data(Data::Set {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                cond,
                get,
            }))
        };
        assert_eq!(p("SET k v"), set(SetCond::Always, false));
        assert_eq!(p("set k v nx"), set(SetCond::Nx, false));
        assert_eq!(p("set k v XX GET"), set(SetCond::Xx, true));
        assert_eq!(err("set k v nx xx"), SYNTAX);
        assert_eq!(err("set k v xx nx"), SYNTAX);
        // A flag given twice is the flag once, as in Redis.
        assert_eq!(p("set k v NX nx"), set(SetCond::Nx, false));
        assert_eq!(p("set k v xx XX get GET"), set(SetCond::Xx, true));
        assert_eq!(err("set k v bogus"), SYNTAX);
        assert_eq!(err("set k v EX"), SYNTAX);
        for e in [
            "set k v EX 10",
            "set k v px 5",
            "set k v KEEPTTL",
            "set k v exat 1 nx",
        ] {
            assert!(err(e).contains("expiry"), "{e}: {}", err(e));
        }
    }

    #[test]
    fn integers_as_redis_reads_them() {
        assert_eq!(
            p("incrby k -5"),
            Ok(Command::Data(Data::IncrBy(b"k".to_vec(), -5)))
        );
        assert_eq!(
            p("decrby k 5"),
            Ok(Command::Data(Data::IncrBy(b"k".to_vec(), -5)))
        );
        assert_eq!(
            p("decr k"),
            Ok(Command::Data(Data::IncrBy(b"k".to_vec(), -1)))
        );
        for bad in [
            "incrby k x",
            "incrby k +1",
            "incrby k 01",
            "incrby k 1.5",
            "incrby k 99999999999999999999",
            "select x",
        ] {
            assert_eq!(err(bad), NOT_INT, "{bad}");
        }
        assert_eq!(
            err("decrby k -9223372036854775808"),
            "ERR decrement would overflow"
        );
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-0"), None);
    }

    #[test]
    fn scan_options() {
        assert_eq!(
            p("SCAN 0 MATCH a* COUNT 100"),
            Ok(Command::Data(Data::Scan {
                cursor: 0,
                pattern: Some(b"a*".to_vec()),
                count: 100
            }))
        );
        assert_eq!(err("scan x"), "ERR invalid cursor");
        assert_eq!(err("scan 0 COUNT 0"), SYNTAX);
        assert_eq!(err("scan 0 MATCH"), SYNTAX);
        assert_eq!(err("scan 0 LIMIT 3"), SYNTAX);
    }

    #[test]
    fn connection_commands() {
        assert_eq!(
            p("HELLO 3 AUTH default pw SETNAME me"),
            Ok(Command::Hello {
                proto: Some(3),
                auth: Some((b"default".to_vec(), b"pw".to_vec())),
                setname: Some(b"me".to_vec()),
            })
        );
        assert!(err("hello 3 AUTH x").starts_with("ERR Syntax error in HELLO option"));
        assert_eq!(p("auth pw"), Ok(Command::Auth(None, b"pw".to_vec())));
        assert_eq!(err("auth a b c"), SYNTAX);
        assert_eq!(
            p("client setname x"),
            Ok(Command::ClientSetName(b"x".to_vec()))
        );
        assert!(err("client bogus").starts_with("ERR unknown subcommand 'bogus'"));
        assert!(err("config bogus").starts_with("ERR unknown subcommand 'bogus'"));
        assert_eq!(
            p("CONFIG GET save"),
            Ok(Command::ConfigGet(vec![b"save".to_vec()]))
        );
        assert_eq!(p("multi"), Ok(Command::Multi));
        assert_eq!(
            err("multi x"),
            "ERR wrong number of arguments for 'multi' command"
        );
    }
}

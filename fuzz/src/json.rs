//! JSON-aware mutation: parse, change one node, serialise. Keeps documents well-formed so the
//! checks get past the parser into the code that uses the values.

use serde_json::{Map, Number, Value};

use crate::Rng;

/// Strings that stress what reads them: paths, digests, media types, references, numbers.
pub const STRINGS: &[&str] = &[
    "",
    " ",
    "/",
    "..",
    "../../../../etc/passwd",
    "/proc/self/exe",
    "a/../../b",
    "sha256:",
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "sha512:00",
    "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.container.image.v1+json",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "linux",
    "amd64",
    "arm64",
    "arm",
    "v8",
    "mount",
    "user",
    "network",
    "uts",
    "ipc",
    "pid",
    "cgroup",
    "0-3",
    "1,2,3-",
    "4294967295-0",
    "a=b",
    "noequals",
    "busybox",
    "example.com/a/b:tag",
    "localhost:5000/x@sha256:00",
    "io.containerd.image.name",
    "org.opencontainers.image.ref.name",
    "net.ipv4.ip_forward",
    "kernel.shmmax",
    "\u{0}",
    "\u{202e}",
    "é",
];

fn number(rng: &mut Rng) -> Value {
    match rng.u8(..8) {
        0 => Value::Number(Number::from(0)),
        1 => Value::Number(Number::from(-1)),
        2 => Value::Number(Number::from(u64::MAX)),
        3 => Value::Number(Number::from(i64::MIN)),
        4 => Value::Number(Number::from(u32::MAX as u64 + 1)),
        5 => Number::from_f64(rng.f64() * 1e20).map_or(Value::Null, Value::Number),
        6 => Value::Number(Number::from(rng.u64(..1 << 20))),
        _ => Value::Number(Number::from(rng.i64(-5..70))),
    }
}

fn string(rng: &mut Rng) -> String {
    match rng.u8(..4) {
        0 => {
            let len = rng.usize(..12);
            (0..len).map(|_| rng.char(..)).collect()
        }
        1 => "x".repeat(rng.usize(..5000)),
        _ => STRINGS[rng.usize(..STRINGS.len())].to_string(),
    }
}

/// A random JSON value, at most `depth` levels deep.
pub fn value(rng: &mut Rng, depth: u32) -> Value {
    match rng.u8(..if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.bool()),
        2 => number(rng),
        3 | 4 => Value::String(string(rng)),
        5 => Value::Array((0..rng.usize(..4)).map(|_| value(rng, depth - 1)).collect()),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.usize(..4) {
                m.insert(string(rng), value(rng, depth - 1));
            }
            Value::Object(m)
        }
    }
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(m) => m.values().map(count).sum(),
        _ => 0,
    }
}

/// Calls `f` on the `n`th node in pre-order; false if there are fewer nodes.
fn with_nth(v: &mut Value, n: &mut usize, f: &mut dyn FnMut(&mut Value)) -> bool {
    if *n == 0 {
        f(v);
        return true;
    }
    *n -= 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|c| with_nth(c, n, f)),
        Value::Object(m) => m.values_mut().any(|c| with_nth(c, n, f)),
        _ => false,
    }
}

/// One edit of one node of the JSON document `data`; `None` if `data` is not JSON.
pub fn mutate(rng: &mut Rng, data: &[u8]) -> Option<Vec<u8>> {
    let mut doc: Value = serde_json::from_slice(data).ok()?;
    for _ in 0..1 + rng.usize(..3) {
        let mut i = rng.usize(..count(&doc));
        let op = rng.u8(..8);
        with_nth(&mut doc, &mut i, &mut |n| edit(rng, n, op));
    }
    Some(if rng.bool() {
        serde_json::to_vec(&doc).ok()?
    } else {
        serde_json::to_vec_pretty(&doc).ok()?
    })
}

fn edit(rng: &mut Rng, n: &mut Value, op: u8) {
    {
        match op {
            // Replace with a random value.
            0 | 1 => *n = value(rng, 2),
            // Same type, another value.
            2 => match n {
                Value::String(s) => *s = string(rng),
                Value::Number(_) => *n = number(rng),
                Value::Bool(b) => *b = !*b,
                _ => *n = value(rng, 1),
            },
            // Remove a member or element.
            3 => match n {
                Value::Object(m) if !m.is_empty() => {
                    let k = m
                        .keys()
                        .nth(rng.usize(..m.len()))
                        .cloned()
                        .unwrap_or_default();
                    m.remove(&k);
                }
                Value::Array(a) if !a.is_empty() => {
                    a.remove(rng.usize(..a.len()));
                }
                _ => *n = Value::Null,
            },
            // Duplicate an element, or add a member.
            4 => match n {
                Value::Array(a) if !a.is_empty() => {
                    let e = a[rng.usize(..a.len())].clone();
                    a.push(e);
                }
                Value::Object(m) => {
                    m.insert(string(rng), value(rng, 2));
                }
                _ => *n = Value::Array(vec![n.clone(), n.clone()]),
            },
            // Wrap in an array or object.
            5 => *n = Value::Array(vec![n.clone()]),
            // Empty it.
            6 => match n {
                Value::Object(m) => m.clear(),
                Value::Array(a) => a.clear(),
                Value::String(s) => s.clear(),
                _ => *n = Value::Object(Map::new()),
            },
            // Deep nesting.
            _ => {
                let mut v = n.clone();
                for _ in 0..rng.usize(1..200) {
                    v = Value::Array(vec![v]);
                }
                *n = v;
            }
        }
    }
}

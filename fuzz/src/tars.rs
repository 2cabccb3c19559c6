//! Structure-aware generation of hostile tars: names with `..`, absolute names, symlinks that
//! point out followed by entries written through them, hard links to outside paths,
//! whiteouts and opaque markers (also through symlinks), device nodes, PAX and GNU long
//! names, xattrs, sparse files, huge sizes in headers, truncated data and streams, and
//! gzip/zstd wrapping. Headers are written byte by byte, so nothing the tar crate's builder
//! would refuse is out of reach.

use std::io::Write;
use std::sync::OnceLock;

use tar::{EntryType, Header};

use crate::Rng;

/// Generates hostile layer tars. `outside` is an absolute directory beside the root that no
/// entry may reach; `outside_rel` is the same directory as seen from the root (`../outside`).
pub struct TarGen<'a> {
    pub outside: &'a str,
    pub outside_rel: &'a str,
}

const SIMPLE: &[&str] = &[
    "a",
    "b",
    "c",
    "etc",
    "bin",
    "lnk",
    "dir",
    "lower",
    "passwd",
    "x y",
    "d\u{e9}j\u{e0}",
];

struct State {
    names: Vec<String>,
    out: Vec<u8>,
}

impl TarGen<'_> {
    /// A random name: fresh, reused, or hostile.
    fn name(&self, rng: &mut Rng, st: &State) -> String {
        let existing = |rng: &mut Rng| -> String {
            if st.names.is_empty() {
                SIMPLE[rng.usize(..SIMPLE.len())].to_string()
            } else {
                st.names[rng.usize(..st.names.len())].clone()
            }
        };
        match rng.u8(..32) {
            0..=9 => {
                let depth = 1 + rng.usize(..3);
                (0..depth)
                    .map(|_| SIMPLE[rng.usize(..SIMPLE.len())])
                    .collect::<Vec<_>>()
                    .join("/")
            }
            10..=14 => existing(rng),
            15..=16 => format!("{}/{}", existing(rng), SIMPLE[rng.usize(..SIMPLE.len())]),
            17 => format!("../{}/pwned", self.outside_rel),
            18 => format!("{}/pwned", self.outside),
            19 => format!("{}/../../pwned", existing(rng)),
            20 => ["/", ".", "..", "", "./", "//", "/.."][rng.usize(..7)].to_string(),
            21 => format!(".wh.{}", SIMPLE[rng.usize(..SIMPLE.len())]),
            22 => format!(
                "{}/.wh.{}",
                existing(rng),
                SIMPLE[rng.usize(..SIMPLE.len())]
            ),
            23 => format!("{}/.wh..wh..opq", existing(rng)),
            24 => [
                ".wh..wh..opq",
                ".wh.",
                ".wh..",
                ".wh...",
                ".wh.../x",
                "a/.wh./b",
            ][rng.usize(..6)]
            .to_string(),
            25 => format!("{}{}", "d/".repeat(40 + rng.usize(..40)), "long"),
            26 => format!("{}/{}", "x".repeat(rng.usize(200..300)), "f"),
            27 => "a\u{0}b".to_string(),
            28 => format!("/{}", existing(rng)),
            29 => format!("./{}/./", existing(rng)),
            30 => format!("lnk/{}", SIMPLE[rng.usize(..SIMPLE.len())]),
            _ => format!("{}/.wh..wh..opq", self.outside),
        }
    }

    /// A random link target.
    fn target(&self, rng: &mut Rng, st: &State) -> String {
        match rng.u8(..14) {
            0..=3 if !st.names.is_empty() => st.names[rng.usize(..st.names.len())].clone(),
            4 => self.outside.to_string(),
            5 => format!("{}/keep", self.outside),
            6 => format!("{}/{}", "..", self.outside_rel),
            7 => format!("../../../../../..{}", self.outside),
            8 => "/".to_string(),
            9 => "..".to_string(),
            10 => "/etc/passwd".to_string(),
            11 => "/proc/self/root".to_string(),
            12 => String::new(),
            _ => SIMPLE[rng.usize(..SIMPLE.len())].to_string(),
        }
    }

    fn header(&self, rng: &mut Rng) -> Header {
        let mut h = if rng.u8(..4) == 0 {
            Header::new_ustar()
        } else {
            Header::new_gnu()
        };
        h.set_mode(match rng.u8(..6) {
            0 => rng.u32(..),
            1 => rng.u32(..0o10000),
            2 => 0,
            3 => 0o4755,
            _ => 0o644,
        });
        let id = |rng: &mut Rng| match rng.u8(..8) {
            0 => u32::MAX as u64,
            1 => 1 << 33,
            2 => 65534,
            3 => 1000,
            _ => 0,
        };
        h.set_uid(id(rng));
        h.set_gid(id(rng));
        h.set_mtime(match rng.u8(..6) {
            0 => u64::MAX,
            1 => 0,
            2 => rng.u64(..),
            _ => 1_600_000_000,
        });
        h
    }

    /// Writes `name` into the header if it fits, else as a PAX or GNU long-name record first.
    fn put_name(&self, rng: &mut Rng, st: &mut State, h: &mut Header, name: &str, link: bool) {
        let b = name.as_bytes();
        let fits = b.len() <= 100;
        if fits && rng.u8(..8) != 0 {
            let old = h.as_old_mut();
            let field = if link {
                &mut old.linkname
            } else {
                &mut old.name
            };
            field.fill(0);
            field[..b.len()].copy_from_slice(b);
        } else if rng.bool() {
            let key = if link { "linkpath" } else { "path" };
            self.pax(st, &[(key, b)]);
        } else {
            let kind = if link {
                EntryType::GNULongLink
            } else {
                EntryType::GNULongName
            };
            let mut data = b.to_vec();
            data.push(0);
            let mut lh = Header::new_gnu();
            lh.as_gnu_mut().expect("gnu header").name[..13].copy_from_slice(b"././@LongLink");
            lh.set_entry_type(kind);
            lh.set_size(data.len() as u64);
            lh.set_mode(0o644);
            lh.set_cksum();
            raw(st, &lh, &data);
        }
    }

    /// A PAX extended header with `records`.
    fn pax(&self, st: &mut State, records: &[(&str, &[u8])]) {
        let mut data = Vec::new();
        for (k, v) in records {
            // "<len> <key>=<value>\n", where len counts itself.
            let rest = k.len() + v.len() + 3;
            let mut len = rest + 1;
            while len.to_string().len() + rest > len {
                len += 1;
            }
            data.extend_from_slice(len.to_string().as_bytes());
            data.push(b' ');
            data.extend_from_slice(k.as_bytes());
            data.push(b'=');
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        let mut h = Header::new_ustar();
        h.as_old_mut().name[..9].copy_from_slice(b"PaxHeader");
        h.set_entry_type(EntryType::XHeader);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        raw(st, &h, &data);
    }

    fn extras(&self, rng: &mut Rng, st: &mut State) {
        if rng.u8(..6) != 0 {
            return;
        }
        let cap: Vec<u8> = (0..rng.usize(..24)).map(|_| rng.u8(..)).collect();
        let choices: [(&str, &[u8]); 10] = [
            ("SCHILY.xattr.user.fuzz", b"value"),
            ("SCHILY.xattr.security.capability", &cap),
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.system.posix_acl_access", &cap),
            ("SCHILY.xattr.", b"x"),
            ("mtime", b"-1.5"),
            ("mtime", b"99999999999999999999.999999999999"),
            ("uid", b"99999999999"),
            ("size", b"18446744073709551615"),
            ("atime", b"abc"),
        ];
        let n = 1 + rng.usize(..3);
        let recs: Vec<(&str, &[u8])> = (0..n)
            .map(|_| choices[rng.usize(..choices.len())])
            .collect();
        self.pax(st, &recs);
    }

    fn entry(&self, rng: &mut Rng, st: &mut State) {
        let name = self.name(rng, st);
        self.extras(rng, st);
        let mut h = self.header(rng);
        let kind = rng.u8(..40);
        let mut data: Vec<u8> = Vec::new();
        match kind {
            0..=11 => {
                h.set_entry_type(EntryType::Regular);
                data = (0..rng.usize(..600)).map(|_| rng.u8(..)).collect();
            }
            12..=18 => h.set_entry_type(EntryType::Directory),
            19..=24 => {
                h.set_entry_type(EntryType::Symlink);
                let t = self.target(rng, st);
                self.put_name(rng, st, &mut h, &t, true);
            }
            25..=29 => {
                h.set_entry_type(EntryType::Link);
                let t = self.target(rng, st);
                self.put_name(rng, st, &mut h, &t, true);
            }
            30..=32 => {
                h.set_entry_type(
                    [EntryType::Char, EntryType::Block, EntryType::Fifo][rng.usize(..3)],
                );
                let _ = h.set_device_major(rng.u32(..300));
                let _ = h.set_device_minor(rng.u32(..300));
            }
            33 => {
                h.set_entry_type(EntryType::XGlobalHeader);
                data = b"20 comment=global!\n".to_vec();
            }
            34 | 35 => {
                // GNU sparse: a few data blocks and holes, sometimes a huge real size.
                if let Some(g) = h.as_gnu_mut() {
                    let blocks = 1 + rng.usize(..3);
                    let mut off = 0u64;
                    for i in 0..blocks {
                        off += rng.u64(..4) * 512;
                        let len = 512 * rng.u64(..3);
                        g.sparse[i].set_offset(off);
                        g.sparse[i].set_length(len);
                        off += len;
                        data.extend((0..len).map(|_| rng.u8(..)));
                    }
                    let real = match rng.u8(..4) {
                        0 => {
                            // A terabyte, nearly all hole: an empty last block ends the map
                            // there, as GNU tar ends a file with a trailing hole.
                            g.sparse[blocks].set_offset(SPARSE_HUGE);
                            g.sparse[blocks].set_length(0);
                            SPARSE_HUGE
                        }
                        1 => off + rng.u64(..1 << 20),
                        _ => off,
                    };
                    g.set_real_size(real);
                    h.set_entry_type(EntryType::GNUSparse);
                } else {
                    h.set_entry_type(EntryType::Regular);
                }
            }
            36 => h.set_entry_type(EntryType::new(rng.u8(..))),
            _ => {
                // A file whose name is (usually) a whiteout.
                h.set_entry_type(EntryType::Regular);
            }
        }
        self.put_name(rng, st, &mut h, &name, false);
        h.set_size(data.len() as u64);
        let lie = rng.u8(..24);
        if lie == 0 {
            // Huge size, little data: the stream ends inside the entry.
            h.set_size([1 << 33, 1 << 40, u64::MAX >> 1][rng.usize(..3)]);
        } else if lie == 1 {
            h.set_size(data.len() as u64 + rng.u64(1..2000));
        }
        h.set_cksum();
        if rng.u8(..64) == 0 {
            // A bad checksum.
            h.as_old_mut().cksum[rng.usize(..6)] ^= 1;
        }
        raw(st, &h, &data);
        st.names.push(name);
    }

    /// A planned hostile sequence: a link that points out, then writes/whiteouts through it.
    fn through_link(&self, rng: &mut Rng, st: &mut State) {
        let link = ["lnk", "a", "etc", "lower"][rng.usize(..4)];
        let target = match rng.u8(..4) {
            0 => self.outside.to_string(),
            1 => format!("../{}", self.outside_rel),
            2 => format!("../../../../../../../../{}", self.outside),
            _ => "..".to_string(),
        };
        let mut h = self.header(rng);
        h.set_entry_type(if rng.u8(..4) == 0 {
            EntryType::Link
        } else {
            EntryType::Symlink
        });
        self.put_name(rng, st, &mut h, link, false);
        self.put_name(rng, st, &mut h, &target, true);
        h.set_size(0);
        h.set_cksum();
        raw(st, &h, &[]);
        st.names.push(link.to_string());
        let then = match rng.u8(..6) {
            0 => format!("{link}/pwned"),
            1 => format!("{link}/keep"),
            2 => format!("{link}/.wh.keep"),
            3 => format!("{link}/.wh..wh..opq"),
            4 => format!("{link}/sub/pwned"),
            _ => format!(".wh.{link}"),
        };
        let mut h = self.header(rng);
        h.set_entry_type(match rng.u8(..5) {
            0 => EntryType::Directory,
            1 => EntryType::Symlink,
            2 => EntryType::Link,
            _ => EntryType::Regular,
        });
        let data: &[u8] = if h.entry_type() == EntryType::Regular {
            b"pwned"
        } else {
            b""
        };
        self.put_name(rng, st, &mut h, &then, false);
        if matches!(h.entry_type(), EntryType::Symlink | EntryType::Link) {
            self.put_name(rng, st, &mut h, "keep", true);
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        raw(st, &h, data);
        st.names.push(then);
    }

    /// A whole hostile layer stream.
    pub fn layer(&self, rng: &mut Rng) -> Vec<u8> {
        if rng.u16(..400) == 0 {
            return bomb().to_vec();
        }
        let mut st = State {
            names: Vec::new(),
            out: Vec::new(),
        };
        for _ in 0..rng.usize(..12) {
            if rng.u8(..5) == 0 {
                self.through_link(rng, &mut st);
            } else {
                self.entry(rng, &mut st);
            }
        }
        match rng.u8(..20) {
            0 => {}
            1 => st.out.extend_from_slice(&[0; 512]),
            2 => st.out.extend((0..rng.usize(1..700)).map(|_| rng.u8(..))),
            _ => st.out.extend_from_slice(&[0; 1024]),
        }
        if rng.u8(..8) == 0 && !st.out.is_empty() {
            let at = rng.usize(..st.out.len());
            st.out.truncate(at);
        }
        match rng.u8(..10) {
            0 | 1 => gzip(&st.out),
            2 => zstd::stream::encode_all(&st.out[..], 1).unwrap_or_default(),
            _ => st.out,
        }
    }
}

fn raw(st: &mut State, h: &Header, data: &[u8]) {
    st.out.extend_from_slice(h.as_bytes());
    st.out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    st.out.extend(std::iter::repeat_n(0u8, pad));
}

/// The real size [`sparse_terabyte`] declares (and the generator's huge sparse files).
pub const SPARSE_HUGE: u64 = 1 << 40;

/// A 3 KB tar holding a GNU sparse file that declares [`SPARSE_HUGE`] bytes: 512 bytes of data
/// at its start, then a terabyte of hole. Written out whole, it fills any disk.
pub fn sparse_terabyte() -> Vec<u8> {
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..10].copy_from_slice(b"lastlog.db");
    h.set_mode(0o644);
    h.set_mtime(1_600_000_000);
    h.set_entry_type(EntryType::GNUSparse);
    h.set_size(512);
    if let Some(g) = h.as_gnu_mut() {
        g.sparse[0].set_offset(0);
        g.sparse[0].set_length(512);
        g.sparse[1].set_offset(SPARSE_HUGE);
        g.sparse[1].set_length(0);
        g.set_real_size(SPARSE_HUGE);
    }
    h.set_cksum();
    let mut st = State {
        names: Vec::new(),
        out: Vec::new(),
    };
    raw(&mut st, &h, &[b's'; 512]);
    st.out.extend_from_slice(&[0; 1024]);
    st.out
}

/// Gzip of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

/// Size of the metadata record in [`bomb`].
pub const BOMB_RECORD: u64 = 512 << 20;

/// A small zstd stream (tens of KB) whose tar holds a PAX extended header claiming (and
/// holding) 512 MiB of records, then one small file: a parser that reads metadata records into
/// memory whole needs 512 MiB for it.
pub fn bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| {
        let Ok(mut e) = zstd::stream::Encoder::new(Vec::new(), 3) else {
            return Vec::new();
        };
        let mut h = Header::new_ustar();
        h.as_old_mut().name[..9].copy_from_slice(b"PaxHeader");
        h.set_entry_type(EntryType::XHeader);
        h.set_size(BOMB_RECORD);
        h.set_mode(0o644);
        h.set_cksum();
        let _ = e.write_all(h.as_bytes());
        let zeros = vec![b'0'; 1 << 20];
        for _ in 0..(BOMB_RECORD >> 20) {
            let _ = e.write_all(&zeros);
        }
        let mut f = Header::new_ustar();
        f.as_old_mut().name[..4].copy_from_slice(b"file");
        f.set_entry_type(EntryType::Regular);
        f.set_size(0);
        f.set_mode(0o644);
        f.set_cksum();
        let _ = e.write_all(f.as_bytes());
        let _ = e.write_all(&[0; 1024]);
        e.finish().unwrap_or_default()
    })
}

/// One member of an archive made by [`archive`].
#[derive(Debug, Clone)]
pub enum Member {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    Hardlink(String),
}

/// A plain tar of `members`, names written unchecked (so `..` and absolute names are kept);
/// long names go in GNU long-name records.
pub fn archive(members: &[(String, Member)]) -> Vec<u8> {
    let mut st = State {
        names: Vec::new(),
        out: Vec::new(),
    };
    for (name, m) in members {
        let mut h = Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        let (et, data, link): (EntryType, &[u8], Option<&str>) = match m {
            Member::File(d) => (EntryType::Regular, d, None),
            Member::Dir => (EntryType::Directory, &[], None),
            Member::Symlink(t) => (EntryType::Symlink, &[], Some(t)),
            Member::Hardlink(t) => (EntryType::Link, &[], Some(t)),
        };
        h.set_entry_type(et);
        for (text, is_link) in [(Some(name.as_str()), false), (link, true)] {
            let Some(text) = text else { continue };
            let b = text.as_bytes();
            if b.len() <= 100 {
                let old = h.as_old_mut();
                let field = if is_link {
                    &mut old.linkname
                } else {
                    &mut old.name
                };
                field[..b.len()].copy_from_slice(b);
            } else {
                let mut data = b.to_vec();
                data.push(0);
                let mut lh = Header::new_gnu();
                lh.as_gnu_mut().expect("gnu header").name[..13].copy_from_slice(b"././@LongLink");
                lh.set_entry_type(if is_link {
                    EntryType::GNULongLink
                } else {
                    EntryType::GNULongName
                });
                lh.set_size(data.len() as u64);
                lh.set_mode(0o644);
                lh.set_cksum();
                raw(&mut st, &lh, &data);
            }
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        raw(&mut st, &h, data);
    }
    st.out.extend_from_slice(&[0; 1024]);
    st.out
}

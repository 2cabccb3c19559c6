//! Where the host's cgroup hierarchies are mounted and where the calling process sits in each:
//! parsed once per process from /proc/self/mountinfo and /proc/self/cgroup.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::CgroupVersion;

/// One mounted hierarchy: a v1 controller set, or the v2 unified tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    /// v1 controllers of this hierarchy (e.g. `["cpu", "cpuacct"]`); empty for v2.
    pub controllers: Vec<String>,
    /// Where it is mounted (e.g. /sys/fs/cgroup/memory).
    pub mount_point: PathBuf,
    /// The cgroup shown at the mount point (mountinfo's root field, usually "/").
    pub mount_root: String,
    /// The calling process's own cgroup in this hierarchy (from /proc/self/cgroup).
    pub own_path: String,
}

impl Hierarchy {
    /// The directory of the cgroup at hierarchy path `cgroup` ("/a/b").
    pub fn dir_of(&self, cgroup: &str) -> PathBuf {
        let rel = if self.mount_root == "/" {
            cgroup
        } else {
            // Inside a container the mount may show a sub-tree: paths are relative to it.
            // A path outside that sub-tree is taken as relative to what is visible.
            cgroup
                .strip_prefix(self.mount_root.as_str())
                .unwrap_or(cgroup)
        };
        let rel = rel.trim_start_matches('/');
        if rel.is_empty() {
            self.mount_point.clone()
        } else {
            self.mount_point.join(rel)
        }
    }
}

/// The cgroup layout a [`crate::Cgroup`] is resolved against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// V1 (legacy or hybrid) or V2 (unified).
    pub version: CgroupVersion,
    /// v1: one entry per controller hierarchy (named hierarchies such as name=systemd are
    /// left out); v2: exactly one entry, the unified tree.
    pub hierarchies: Vec<Hierarchy>,
}

static HOST: OnceLock<Layout> = OnceLock::new();

/// A v1 mount found in mountinfo, before it is matched with /proc/self/cgroup.
#[derive(Debug)]
struct Mount {
    fstype: String,
    mount_point: PathBuf,
    root: String,
    super_opts: Vec<String>,
}

impl Layout {
    /// The host's layout, read from /proc/self/mountinfo and /proc/self/cgroup the first time
    /// and kept for the life of the process.
    pub fn host() -> Result<&'static Layout> {
        if let Some(l) = HOST.get() {
            return Ok(l);
        }
        let mountinfo = read_proc("/proc/self/mountinfo")?;
        let cgroup = read_proc("/proc/self/cgroup")?;
        let layout = Layout::parse(crate::detect(), &mountinfo, &cgroup)?;
        Ok(HOST.get_or_init(|| layout))
    }

    /// Builds a layout from the text of a mountinfo and a `/proc/<pid>/cgroup` file.
    pub fn parse(version: CgroupVersion, mountinfo: &str, proc_cgroup: &str) -> Result<Layout> {
        let mounts = parse_mountinfo(mountinfo);
        let lines = parse_proc_cgroup(proc_cgroup);
        match version {
            CgroupVersion::V2 => {
                let m = mounts
                    .iter()
                    .filter(|m| m.fstype == "cgroup2")
                    // Prefer the canonical place when there are several cgroup2 mounts.
                    .min_by_key(|m| m.mount_point != Path::new("/sys/fs/cgroup"))
                    .ok_or_else(|| Error::Layout("no cgroup2 mount in mountinfo".into()))?;
                let own = lines
                    .iter()
                    .find(|(id, _, _)| *id == "0")
                    .map(|(_, _, p)| p.to_string())
                    .unwrap_or_else(|| "/".into());
                Ok(Layout::v2(m.mount_point.clone(), &m.root, &own))
            }
            CgroupVersion::V1 => {
                // Every controller name the kernel lists for us (named hierarchies excluded).
                let known: Vec<&str> = lines
                    .iter()
                    .filter(|(id, _, _)| *id != "0")
                    .flat_map(|(_, ctrls, _)| ctrls.split(','))
                    .filter(|c| !c.is_empty() && !c.starts_with("name="))
                    .collect();
                let mut hierarchies: Vec<Hierarchy> = Vec::new();
                for m in mounts.iter().filter(|m| m.fstype == "cgroup") {
                    let mut controllers: Vec<String> = m
                        .super_opts
                        .iter()
                        .filter(|o| known.contains(&o.as_str()))
                        .cloned()
                        .collect();
                    if controllers.is_empty() {
                        continue; // name=systemd and other named hierarchies
                    }
                    controllers.sort();
                    if hierarchies.iter().any(|h| h.controllers == controllers) {
                        continue; // a bind mount of a hierarchy we already have
                    }
                    let own = lines
                        .iter()
                        .find(|(_, ctrls, _)| {
                            let mut c: Vec<&str> = ctrls.split(',').collect();
                            c.sort();
                            c == controllers
                        })
                        .map(|(_, _, p)| p.to_string())
                        .unwrap_or_else(|| "/".into());
                    hierarchies.push(Hierarchy {
                        controllers,
                        mount_point: m.mount_point.clone(),
                        mount_root: m.root.clone(),
                        own_path: own,
                    });
                }
                if hierarchies.is_empty() {
                    return Err(Error::Layout(
                        "no cgroup v1 controller hierarchy is mounted".into(),
                    ));
                }
                Ok(Layout {
                    version,
                    hierarchies,
                })
            }
        }
    }

    /// A v2 layout rooted at `root` (any cgroup2 directory, or a fake tree in tests), where the
    /// caller's own cgroup is `own_path` and `root` shows cgroup `mount_root`.
    pub fn v2(root: PathBuf, mount_root: &str, own_path: &str) -> Layout {
        Layout {
            version: CgroupVersion::V2,
            hierarchies: vec![Hierarchy {
                controllers: Vec::new(),
                mount_point: root,
                mount_root: mount_root.to_string(),
                own_path: own_path.to_string(),
            }],
        }
    }

    /// The calling process's own v2 cgroup path from /proc/self/cgroup's "0::" line, if any
    /// (useful to build a [`Layout::v2`] for the hybrid unified mount).
    pub fn own_unified_path() -> Result<Option<String>> {
        let cgroup = read_proc("/proc/self/cgroup")?;
        Ok(parse_proc_cgroup(&cgroup)
            .into_iter()
            .find(|(id, _, _)| *id == "0")
            .map(|(_, _, p)| p.to_string()))
    }
}

fn read_proc(path: &str) -> Result<String> {
    fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.into(),
        source,
    })
}

/// "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS"
fn parse_mountinfo(s: &str) -> Vec<Mount> {
    s.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let mut r = right.split(' ');
            let fstype = r.next()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            let _source = r.next()?;
            let super_opts = r.next().unwrap_or("");
            Some(Mount {
                fstype: fstype.to_string(),
                mount_point: PathBuf::from(unescape(fields.get(4)?)),
                root: unescape(fields.get(3)?),
                super_opts: super_opts.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as \ooo octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// "ID:CONTROLLERS:PATH" lines.
fn parse_proc_cgroup(s: &str) -> Vec<(&str, &str, &str)> {
    s.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            Some((it.next()?, it.next()?, it.next()?))
        })
        .collect()
}

/// Splits and checks an OCI cgroups path. Returns (absolute, components).
pub(crate) fn split_cgroups_path(path: &str) -> Result<(bool, Vec<&str>)> {
    let invalid = |reason: &str| Error::InvalidPath {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    if !path.starts_with('/') && path.split(':').count() == 3 && !path.contains('/') {
        return Err(Error::SystemdPath(path.to_string()));
    }
    if path.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    let absolute = path.starts_with('/');
    let mut comps = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(invalid("\"..\" components are not allowed")),
            c => comps.push(c),
        }
    }
    if comps.is_empty() {
        return Err(invalid(if absolute {
            "refusing to use the root cgroup"
        } else {
            "resolves to the caller's own cgroup"
        }));
    }
    Ok((absolute, comps))
}

/// The hierarchy path ("/a/b") a cgroups path names in hierarchy `h`.
pub(crate) fn hierarchy_path(h: &Hierarchy, absolute: bool, comps: &[&str]) -> String {
    let mut p = if absolute {
        String::new()
    } else {
        h.own_path.trim_end_matches('/').to_string()
    };
    for c in comps {
        p.push('/');
        p.push_str(c);
    }
    p
}

/// A directory of a resolved cgroup, kept in [`crate::Cgroup`] (and so in state.json).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Dir {
    /// v1 controllers of the hierarchy; empty for v2.
    pub controllers: Vec<String>,
    /// The hierarchy's mount point (never created or removed).
    pub mount: PathBuf,
    /// The cgroup's directory.
    pub path: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 31 0:39 / /sys/fs/cgroup/net_cls,net_prio rw shared:7 - cgroup cgroup rw,net_cls,net_prio,xattr
";
    const PROC_CGROUP: &str = "\
9:name=systemd:/
4:memory:/process_api/abc
1:cpu:/
7:net_prio,net_cls:/x
0::/
";

    #[test]
    fn parses_hybrid_layout() {
        let l = Layout::parse(CgroupVersion::V1, MOUNTINFO, PROC_CGROUP).unwrap();
        let names: Vec<String> = l
            .hierarchies
            .iter()
            .map(|h| h.controllers.join(","))
            .collect();
        assert_eq!(names, ["cpu", "memory", "net_cls,net_prio"]);
        assert_eq!(l.hierarchies[1].own_path, "/process_api/abc");
        assert_eq!(l.hierarchies[2].own_path, "/x");
        assert_eq!(
            l.hierarchies[2].mount_point,
            PathBuf::from("/sys/fs/cgroup/net_cls,net_prio")
        );
    }

    #[test]
    fn parses_unified_layout() {
        let l = Layout::parse(CgroupVersion::V2, MOUNTINFO, "0::/user.slice/x\n").unwrap();
        assert_eq!(l.hierarchies.len(), 1);
        assert_eq!(
            l.hierarchies[0].mount_point,
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        assert_eq!(l.hierarchies[0].own_path, "/user.slice/x");
    }

    #[test]
    fn no_v1_hierarchy_is_an_error() {
        let err = Layout::parse(CgroupVersion::V1, "", "").unwrap_err();
        assert!(err.to_string().contains("no cgroup v1"), "{err}");
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape(r"/a\040b\\"), r"/a b\\");
        assert_eq!(unescape(r"/a\134b"), r"/a\b");
    }

    #[test]
    fn mount_root_is_stripped() {
        let h = Hierarchy {
            controllers: vec!["memory".into()],
            mount_point: "/sys/fs/cgroup/memory".into(),
            mount_root: "/docker/abc".into(),
            own_path: "/docker/abc".into(),
        };
        assert_eq!(
            h.dir_of(&hierarchy_path(&h, false, &["x"])),
            PathBuf::from("/sys/fs/cgroup/memory/x")
        );
    }

    #[test]
    fn splits_paths() {
        assert_eq!(
            split_cgroups_path("/a//b/").unwrap(),
            (true, vec!["a", "b"])
        );
        assert_eq!(
            split_cgroups_path("a/./b").unwrap(),
            (false, vec!["a", "b"])
        );
        for bad in ["/a/../b", "..", "/", "", ".", "a/\0"] {
            assert!(split_cgroups_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            split_cgroups_path("system.slice:docker:abc"),
            Err(Error::SystemdPath(_))
        ));
    }
}

//! Namespaces: which ones clone() creates, joining existing ones by path with setns(), and the
//! user namespace's id maps, written by the parent from outside.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use nix::sched::{setns, CloneFlags};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespace, LinuxNamespaceType};

/// The clone flag of a namespace type.
pub fn clone_flag(typ: LinuxNamespaceType) -> CloneFlags {
    match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The flags for clone(): every new namespace but cgroup (unshared by the child once it is in
/// its cgroup, so that its cgroup root is the container's) and time (unshared by the child, as
/// the kernel only allows it with unshare). A new user namespace is only created by clone when
/// no namespace is joined by path after it... see [`JoinPlan`].
pub fn clone_flags(namespaces: &[LinuxNamespace]) -> CloneFlags {
    let joins_user = namespaces
        .iter()
        .any(|ns| ns.typ() == LinuxNamespaceType::User && ns.path().is_some());
    let mut flags = CloneFlags::empty();
    for ns in namespaces.iter().filter(|ns| ns.path().is_none()) {
        match ns.typ() {
            LinuxNamespaceType::Cgroup | LinuxNamespaceType::Time => {}
            // After joining a user namespace by path, new namespaces must be made inside it
            // (by unshare in the child), except pid which clone must make.
            t if joins_user && t != LinuxNamespaceType::Pid => {}
            t => flags |= clone_flag(t),
        }
    }
    flags
}

/// Namespaces the child unshares itself, after joining by path and entering its cgroup.
pub fn unshare_flags(namespaces: &[LinuxNamespace]) -> CloneFlags {
    let joins_user = namespaces
        .iter()
        .any(|ns| ns.typ() == LinuxNamespaceType::User && ns.path().is_some());
    let mut flags = CloneFlags::empty();
    for ns in namespaces.iter().filter(|ns| ns.path().is_none()) {
        match ns.typ() {
            LinuxNamespaceType::Cgroup | LinuxNamespaceType::Time => flags |= clone_flag(ns.typ()),
            LinuxNamespaceType::Pid | LinuxNamespaceType::User => {}
            t if joins_user => flags |= clone_flag(t),
            _ => {}
        }
    }
    flags
}

/// Open every namespace to join by path, user first (the others must be joined from inside it).
/// Pid is left out: the parent joins it before clone so the child is born in it.
pub fn open_joins(namespaces: &[LinuxNamespace]) -> Result<Vec<(File, CloneFlags)>, String> {
    let mut out = Vec::new();
    let mut ordered: Vec<&LinuxNamespace> =
        namespaces.iter().filter(|n| n.path().is_some()).collect();
    ordered.sort_by_key(|n| {
        if n.typ() == LinuxNamespaceType::User {
            0
        } else {
            1
        }
    });
    for ns in ordered {
        if ns.typ() == LinuxNamespaceType::Pid {
            continue;
        }
        let path = ns
            .path()
            .as_ref()
            .map(|p| p.as_path())
            .unwrap_or(Path::new(""));
        let f = File::open(path)
            .map_err(|e| format!("opening {} namespace {}: {e}", ns.typ(), path.display()))?;
        out.push((f, clone_flag(ns.typ())));
    }
    Ok(out)
}

/// Join the namespaces opened by [`open_joins`].
pub fn join(opened: &[(File, CloneFlags)]) -> Result<(), String> {
    for (f, flag) in opened {
        setns(f.as_fd(), *flag).map_err(|e| format!("joining namespace {flag:?}: {e}"))?;
    }
    Ok(())
}

/// The pid namespace to join by path, if any: joined by the parent before clone.
pub fn pid_join_path(namespaces: &[LinuxNamespace]) -> Option<&Path> {
    namespaces
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Pid)
        .and_then(|n| n.path().as_deref())
}

/// The text of a uid_map/gid_map file.
pub fn id_map_text(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Write the child's uid and gid maps (the parent does this, from outside the namespace).
pub fn write_id_maps(
    pid: i32,
    uids: &[LinuxIdMapping],
    gids: &[LinuxIdMapping],
) -> Result<(), String> {
    let write = |file: &str, text: String| {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, text.as_bytes())
            .map_err(|e| format!("writing {path} ({:?}): {e}", text.trim_end()))
    };
    write("uid_map", id_map_text(uids))?;
    if !nix::unistd::geteuid().is_root() {
        // An unprivileged writer may only map its own gid, and only once setgroups is denied.
        write("setgroups", "deny".to_string())?;
    }
    write("gid_map", id_map_text(gids))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(t: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let mut n = LinuxNamespace::default();
        n.set_typ(t);
        n.set_path(path.map(Into::into));
        n
    }

    #[test]
    fn cgroup_namespace_is_unshared_by_the_child() {
        let list = vec![
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Cgroup, None),
            ns(LinuxNamespaceType::Network, Some("/proc/1/ns/net")),
        ];
        let flags = clone_flags(&list);
        assert!(flags.contains(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS));
        assert!(!flags.contains(CloneFlags::CLONE_NEWCGROUP));
        assert!(!flags.contains(CloneFlags::CLONE_NEWNET));
        assert_eq!(unshare_flags(&list), CloneFlags::CLONE_NEWCGROUP);
    }

    #[test]
    fn maps_are_formatted_one_per_line() {
        let m: LinuxIdMapping =
            serde_json::from_str(r#"{"containerID":0,"hostID":1000,"size":10}"#).unwrap();
        assert_eq!(id_map_text(&[m, m]), "0 1000 10\n0 1000 10\n");
    }
}

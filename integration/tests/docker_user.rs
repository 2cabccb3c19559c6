//! User names through the Docker Engine API, driven by Debian's unmodified docker CLI 20.10:
//! `docker run -u NAME[:GROUP]`, `UID:GROUPNAME`, `--group-add`, an image's `USER name`
//! (built with `docker build` and loaded), exec inheriting the container's user, HOME from the
//! container's /etc/passwd; a missing user failing at start with dockerd's words, status and
//! state (nothing left running or mounted); and an /etc/passwd that is a symlink out of the
//! rootfs never reading the host's file.
//!
//! berthd runs in a network namespace of the test's own; every test has its own daemon, temp
//! dirs and container names.

use std::collections::BTreeSet;

use berth_integration::manager::image::Entry;
use berth_integration::manager::tasks::NsDaemon;
use berth_integration::manager::{mounts_under, Berthd};

const IMAGE: &str = "berth/user-test:v1";
const APPLETS: &[&str] = &["bin/id", "bin/sleep", "bin/echo", "bin/env", "bin/printf"];
const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n\
app:x:1000:1000:App:/home/app:/bin/sh\n\
web:x:1001:1001::/srv/web:/bin/sh\n";
const GROUP: &[u8] = b"root:x:0:\nwheel:x:10:root\napp:x:1000:\nweb:x:1001:\n\
staff:x:50:app\naudio:x:29:app,web\n";

fn daemon() -> NsDaemon {
    NsDaemon::docker_with_busybox(
        IMAGE,
        APPLETS,
        vec![
            Entry::Dir("etc", 0o755),
            Entry::File("etc/passwd", 0o644, PASSWD.to_vec()),
            Entry::File("etc/group", 0o644, GROUP.to_vec()),
        ],
    )
}

/// `id -u`, `id -g` and the set of `id -G` of `docker run ARGS IMAGE`, and its HOME.
fn ids(d: &Berthd, args: &[&str]) -> (String, String, BTreeSet<u32>, String) {
    let mut a = vec!["run", "--rm"];
    a.extend_from_slice(args);
    a.extend_from_slice(&[IMAGE, "sh", "-c", "id -u; id -g; id -G; echo $HOME"]);
    let out = d.docker(&a);
    parse_ids(out.ok())
}

fn parse_ids(out: &str) -> (String, String, BTreeSet<u32>, String) {
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l.len(), 4, "{out}");
    let groups = l[2]
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    (l[0].into(), l[1].into(), groups, l[3].into())
}

fn set(g: &[u32]) -> BTreeSet<u32> {
    g.iter().copied().collect()
}

fn inspect(d: &Berthd, name: &str, format: &str) -> String {
    d.docker(&["inspect", "--format", format, name])
        .ok()
        .trim()
        .to_string()
}

#[test]
fn names_groups_and_home_resolve_in_the_container() {
    let d = daemon();
    // A name: its uid, its passwd group, the groups listing it, its home.
    assert_eq!(
        ids(&d, &["-u", "app"]),
        (
            "1000".into(),
            "1000".into(),
            set(&[1000, 50, 29]),
            "/home/app".into()
        )
    );
    // name:group and uid:groupname: the group given, no supplementary ones.
    assert_eq!(
        ids(&d, &["-u", "app:staff"]),
        ("1000".into(), "50".into(), set(&[50]), "/home/app".into())
    );
    assert_eq!(
        ids(&d, &["-u", "1001:audio"]),
        ("1001".into(), "29".into(), set(&[29]), "/srv/web".into())
    );
    // A uid with no passwd entry: gid 0, HOME /.
    assert_eq!(
        ids(&d, &["-u", "4242"]),
        ("4242".into(), "0".into(), set(&[0]), "/".into())
    );
    // Root by default, with the groups that list root, as dockerd gives busybox's root.
    assert_eq!(
        ids(&d, &[]),
        ("0".into(), "0".into(), set(&[0, 10]), "/root".into())
    );
    // --group-add: a name and a gid without an entry, on top of the user's own.
    assert_eq!(
        ids(
            &d,
            &["-u", "web", "--group-add", "staff", "--group-add", "777"]
        ),
        (
            "1001".into(),
            "1001".into(),
            set(&[1001, 29, 50, 777]),
            "/srv/web".into()
        )
    );
    // An environment's HOME wins over the passwd entry's.
    assert_eq!(ids(&d, &["-u", "app", "-e", "HOME=/x"]).3, "/x");
    // inspect shows the user as asked.
    d.docker(&[
        "create",
        "--name",
        "asked",
        "-u",
        "app:staff",
        IMAGE,
        "true",
    ])
    .ok();
    assert_eq!(inspect(&d, "asked", "{{.Config.User}}"), "app:staff");
    d.docker(&["rm", "asked"]).ok();
}

#[test]
fn an_image_user_runs_exec_inherits_and_each_start_resolves_again() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {IMAGE}\nUSER app\nCMD [\"sleep\", \"1000\"]\n"),
    )
    .unwrap();
    d.docker(&[
        "build",
        "-q",
        "-t",
        "berth/user-app:v1",
        dir.path().to_str().unwrap(),
    ])
    .ok();
    let out = d.docker(&["run", "--rm", "berth/user-app:v1", "id", "-u"]);
    assert_eq!(out.ok(), "1000\n");
    d.docker(&["run", "-d", "--name", "u1", "berth/user-app:v1"])
        .ok();
    assert_eq!(inspect(&d, "u1", "{{.Config.User}}"), "app");
    // exec runs as the container's user, with its groups and HOME; -u picks another.
    let out = d.docker(&["exec", "u1", "sh", "-c", "id -u; id -g; id -G; echo $HOME"]);
    assert_eq!(
        parse_ids(out.ok()),
        (
            "1000".into(),
            "1000".into(),
            set(&[1000, 50, 29]),
            "/home/app".into()
        )
    );
    let out = d.docker(&[
        "exec",
        "-u",
        "web",
        "u1",
        "sh",
        "-c",
        "id -u; id -g; id -G; echo $HOME",
    ]);
    assert_eq!(
        parse_ids(out.ok()),
        (
            "1001".into(),
            "1001".into(),
            set(&[1001, 29]),
            "/srv/web".into()
        )
    );
    // The record keeps the name: after app's uid changes in the container's own
    // /etc/passwd, the next start runs as the new uid.
    d.docker(&[
        "exec",
        "-u",
        "root",
        "u1",
        "sh",
        "-c",
        "printf 'root:x:0:0::/root:/bin/sh\\napp:x:2000:1000::/home/app:/bin/sh\\n' > /etc/passwd",
    ])
    .ok();
    d.docker(&["restart", "-t", "1", "u1"]).ok();
    let out = d.docker(&["exec", "u1", "id", "-u"]);
    assert_eq!(out.ok(), "2000\n");
    d.docker(&["rm", "-f", "u1"]).ok();
}

/// `docker run ARGS` fails as it does when dockerd cannot start the container: 125, with
/// `msg` in what the CLI prints.
#[track_caller]
fn run_fails(d: &Berthd, args: &[&str], msg: &str) {
    let mut a = vec!["run"];
    a.extend_from_slice(args);
    let out = d.docker(&a);
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(out.stderr.contains(msg), "{}", out.stderr);
}

#[test]
fn a_missing_user_fails_at_start_as_dockerd_and_leaves_nothing() {
    let d = daemon();
    let nosuch = "unable to find user nosuch: no matching entries in passwd file";
    // create takes the name; start fails with libcontainer's words.
    d.docker(&["create", "--name", "m1", "-u", "nosuch", IMAGE, "true"])
        .ok();
    let out = d.docker(&["start", "m1"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains(nosuch), "{}", out.stderr);
    let id = inspect(&d, "m1", "{{.Id}}");
    let start = format!("/v1.41/containers/{id}/start");
    let (status, _, body) = d.docker_http("POST", &start, "application/json", b"");
    assert_eq!(status, 500, "{body}");
    let msg: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(msg["message"], nosuch);
    // dockerd's state after a failed start: created, exit code 128, the error kept.
    assert_eq!(
        inspect(
            &d,
            "m1",
            "{{.State.Status}} {{.State.ExitCode}} {{.State.Error}}"
        ),
        format!("created 128 {nosuch}")
    );
    // No task bundle, no rootfs mounted, no network namespace left for it.
    assert!(!d.state().join("tasks/moby").join(&id).exists());
    let tasks = d.state().join("tasks");
    assert!(
        mounts_under(&tasks).is_empty(),
        "{:?}",
        mounts_under(&tasks)
    );
    d.networks_released();
    let netns: Vec<_> = std::fs::read_dir(d.state().join("netns"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(netns.is_empty(), "{netns:?}");
    // docker run: the CLI's 125; --rm removes the container. Any group-add string is taken
    // at create; one the container's /etc/group does not have fails at start.
    let group = |g: &str| format!("Unable to find group {g}: no matching entries in group file");
    run_fails(
        &d,
        &["--name", "m2", "-u", "app:nogroup", IMAGE, "true"],
        "unable to find group nogroup: no matching entries in group file",
    );
    run_fails(
        &d,
        &[
            "--rm",
            "--name",
            "m3",
            "--group-add",
            "video",
            IMAGE,
            "true",
        ],
        &group("video"),
    );
    run_fails(
        &d,
        &["--rm", "--group-add", "a,b", IMAGE, "true"],
        &group("a,b"),
    );
    let names = d.docker(&["ps", "-a", "--format", "{{.Names}}"]);
    let names: BTreeSet<&str> = names.ok().lines().collect();
    assert_eq!(names, BTreeSet::from(["m1", "m2"]));
    d.docker(&["rm", "m1", "m2"]).ok();
}

#[test]
fn a_passwd_symlinked_out_of_the_rootfs_is_read_inside_it() {
    // The host side: files that would resolve these names if they were read.
    let host = tempfile::tempdir().unwrap();
    let (passwd, group) = (host.path().join("passwd"), host.path().join("group"));
    std::fs::write(&passwd, "hostonly:x:4321:4321::/h:/bin/sh\n").unwrap();
    std::fs::write(&group, "hostgroup:x:4322:\n").unwrap();
    // A relative link climbing out of the rootfs, and an absolute one.
    let rel = format!("../../../../../../../..{}", passwd.display());
    let rel: &'static str = Box::leak(rel.into_boxed_str());
    let abs: &'static str = Box::leak(group.display().to_string().into_boxed_str());
    let evil = "berth/user-evil:v1";
    let d = NsDaemon::docker_with_busybox(
        evil,
        APPLETS,
        vec![
            Entry::Dir("etc", 0o755),
            Entry::Symlink("etc/passwd", rel),
            Entry::Symlink("etc/group", abs),
        ],
    );
    run_fails(
        &d,
        &["--rm", "-u", "hostonly", evil, "id"],
        "unable to find user hostonly",
    );
    run_fails(
        &d,
        &["--rm", "-u", "0:hostgroup", evil, "id"],
        "unable to find group hostgroup",
    );
    // Nor does exec -u: as dockerd, the error comes on the output stream, exit code 126.
    d.docker(&["run", "-d", "--name", "ev", evil, "sleep", "1000"])
        .ok();
    let out = d.docker(&["exec", "-u", "hostonly", "ev", "id"]);
    assert_eq!(out.code, 126, "{out:?}");
    assert!(
        out.stdout.contains("unable to find user hostonly"),
        "{out:?}"
    );
    d.docker(&["rm", "-f", "ev"]).ok();
}

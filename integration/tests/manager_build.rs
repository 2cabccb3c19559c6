//! `berth build` through berthd: a table of Dockerfiles, each with its context made here, whose
//! images are checked by running them (`berth run --rm`) and by reading their config; the
//! cache (a hit on an unchanged rebuild, a miss exactly from the changed step on); and bad
//! input, after which no build container, mount, active snapshot or build lease is left and
//! no image was named.
//!
//! The base image is a local busybox imported as docker.io/library/busybox:latest in the
//! test's namespace; nothing is pulled. berthd runs in a network namespace of the test's own
//! (RUN steps join the default bridge): bridges, veths and iptables rules go with it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_integration::manager::image::{self, Entry, Image, Layer};
use berth_integration::manager::tasks::NsDaemon;
use berth_integration::manager::{mounts_under, unique, Berthd, Out};
use serde_json::Value;

const BASE: &str = "docker.io/library/busybox:latest";

const APPLETS: &[&str] = &[
    "bin/echo",
    "bin/cat",
    "bin/rm",
    "bin/ls",
    "bin/stat",
    "bin/id",
    "bin/mkdir",
    "bin/test",
    "bin/true",
    "bin/false",
    "bin/env",
    "bin/touch",
    "bin/sleep",
    "bin/readlink",
    "bin/pwd",
    "bin/grep",
    "bin/cp",
    "bin/chmod",
    "bin/chown",
    "bin/ip",
    "bin/nc",
    "bin/cut",
    "bin/hostname",
];

/// berthd in a network namespace of its own, with the base image.
fn daemon(prefix: &str) -> NsDaemon {
    daemon_on(Berthd::start_in_netns(&[]).unwrap(), prefix)
}

/// berthd on the host's network (to reach a server of the test's on 127.0.0.1), for builds
/// that run no container on a bridge.
fn daemon_on_host(prefix: &str) -> NsDaemon {
    daemon_on(Berthd::start().unwrap(), prefix)
}

fn daemon_on(d: Berthd, prefix: &str) -> NsDaemon {
    let ns = unique(prefix);
    let mut entries = vec![Entry::Dir("bin", 0o755)];
    for a in APPLETS {
        entries.push(Entry::Symlink(a, "busybox"));
    }
    entries.push(Entry::Dir("etc", 0o755));
    entries.push(Entry::File(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n".to_vec(),
    ));
    entries.push(Entry::File(
        "etc/group",
        0o644,
        b"root:x:0:\napp:x:1000:\nstaff:x:50:\n".to_vec(),
    ));
    let img = Image::with_config(
        BASE,
        vec![image::base_layer().unwrap(), Layer::build(&entries).unwrap()],
        serde_json::json!({"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}),
    )
    .unwrap();
    berth_integration::manager::tasks::import(&d, &ns, &img).unwrap();
    NsDaemon { d, ns }
}

/// Writes a context dir: `path` → content; a path ending in `/` is a directory; `@path` →
/// content makes a symlink to content.
fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (p, c) in files {
        if let Some(link) = p.strip_prefix('@') {
            let full = dir.path().join(link);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(c, full).unwrap();
        } else if p.ends_with('/') {
            std::fs::create_dir_all(dir.path().join(p)).unwrap();
        } else {
            let full = dir.path().join(p);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, c).unwrap();
        }
    }
    dir
}

fn build(d: &NsDaemon, ctx: &Path, args: &[&str]) -> Out {
    let mut a = vec!["build"];
    a.extend_from_slice(args);
    a.push(ctx.to_str().unwrap());
    d.berth(&d.ns, &a)
}

/// Runs `sh -c cmd` in the image (the image's own command for an empty `cmd`).
fn run(d: &NsDaemon, img: &str, cmd: &str) -> String {
    let id = unique("b");
    let mut args = vec!["run", "--rm", img, &id];
    if !cmd.is_empty() {
        args.extend(["sh", "-c", cmd]);
    }
    d.berth(&d.ns, &args).ok().to_string()
}

/// The config of the image built with `--iidfile`.
fn config(d: &NsDaemon, iid: &Path) -> Value {
    let id = std::fs::read_to_string(iid).unwrap();
    let raw = d
        .berth(&d.ns, &["content", "get", id.trim()])
        .ok()
        .to_string();
    serde_json::from_str(&raw).unwrap()
}

/// Nothing of a build is left: no mount, no active snapshot or view, no build lease, no
/// build dir, no runtime container.
#[track_caller]
fn assert_clean(d: &NsDaemon) {
    // Background work (a cancelled build's cleanup) may still be finishing.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // (`<state>/netns` itself is a mount of the networks' for good.)
        let netns_dir = d.state().join("netns");
        let mounts: Vec<_> = mounts_under(&d.state())
            .into_iter()
            .filter(|m| *m != netns_dir)
            .collect();
        let snaps = d.ctr(&d.ns, &["snapshots", "ls"]).ok().to_string();
        let leases = d.ctr(&d.ns, &["leases", "ls"]).ok().to_string();
        let builds: Vec<_> = std::fs::read_dir(d.state().join("builds"))
            .map(|r| r.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        let runtime: Vec<_> = std::fs::read_dir(d.state().join("builds/runtime"))
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name())
                    .filter(|n| n != "seccomp-cache")
                    .collect()
            })
            .unwrap_or_default();
        let active = snaps
            .lines()
            .any(|l| l.contains("Active") || l.contains("View"));
        let build_lease = leases
            .lines()
            .any(|l| l.starts_with("build-") && !l.starts_with("build-cache-"));
        let dirs = builds.iter().any(|n| n != "runtime");
        let network = network_left(d);
        if mounts.is_empty()
            && !active
            && !build_lease
            && !dirs
            && runtime.is_empty()
            && network.is_empty()
        {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "build left: mounts {mounts:?}\nsnapshots:\n{snaps}\nleases:\n{leases}\nbuild dirs {builds:?}\nruntime {runtime:?}\nnetwork: {network:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What RUN steps' networks left: network namespaces, attachments, address leases and, in
/// berthd's own network namespace, veths and iptables rules naming a build container.
fn network_left(d: &NsDaemon) -> Vec<String> {
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut left: Vec<String> = names(&d.state().join("netns"))
        .into_iter()
        .map(|n| format!("netns {n}"))
        .collect();
    left.extend(
        names(&d.state().join("networks").join(&d.ns))
            .into_iter()
            .map(|n| format!("attachment {n}")),
    );
    let ipam = d.root().join("networks").join("ipam");
    for net in names(&ipam) {
        for f in names(&ipam.join(&net)) {
            if f.parse::<std::net::IpAddr>().is_ok() {
                left.push(format!("address lease {net}/{f}"));
            }
        }
    }
    if d.netns().is_some() {
        let veths = d.in_netns(&["ip", "-o", "link", "show", "type", "veth"]);
        left.extend(veths.ok().lines().map(|l| format!("veth {l}")));
        for table in ["nat", "filter"] {
            let rules = d.in_netns(&["iptables-save", "-t", table]);
            left.extend(
                rules
                    .ok()
                    .lines()
                    .filter(|l| l.contains("build-"))
                    .map(|l| format!("{table} rule {l}")),
            );
        }
    }
    left
}

type Check = fn(&NsDaemon, &str, &Value);

struct Case {
    name: &'static str,
    files: &'static [(&'static str, &'static str)],
    dockerfile: &'static str,
    args: &'static [&'static str],
    /// Commands run in the image and their expected output.
    runs: &'static [(&'static str, &'static str)],
    check: Check,
}

fn history_empty(cfg: &Value) -> Vec<bool> {
    cfg["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["empty_layer"].as_bool().unwrap_or(false))
        .collect()
}

const CASES: &[Case] = &[
    Case {
        name: "instructions",
        files: &[],
        dockerfile: "FROM busybox\n\
ENV A=1 B=\"two words\"\n\
LABEL l=v other=\"x y\"\n\
WORKDIR /w\n\
RUN echo $A > a && echo \"$B\" > b\n\
EXPOSE 80 53/udp\n\
VOLUME /data\n\
STOPSIGNAL SIGINT\n\
USER 1000\n\
RUN id -u > /tmp/uid\n\
CMD [\"echo\", \"from-cmd\"]\n",
        args: &["--label", "cli=yes"],
        runs: &[
            ("cat /w/a /w/b; pwd; id -u", "1\ntwo words\n/w\n1000\n"),
            ("cat /tmp/uid", "1000\n"),
            ("", "from-cmd\n"),
        ],
        check: |_, _, cfg| {
            let c = &cfg["config"];
            assert!(c["Env"].as_array().unwrap().contains(&"A=1".into()), "{c}");
            assert!(c["Env"].as_array().unwrap().contains(&"B=two words".into()), "{c}");
            assert_eq!(c["Labels"]["l"], "v");
            assert_eq!(c["Labels"]["other"], "x y");
            assert_eq!(c["Labels"]["cli"], "yes");
            assert_eq!(c["WorkingDir"], "/w");
            assert_eq!(c["User"], "1000");
            assert!(c["ExposedPorts"]["80/tcp"].is_object(), "{c}");
            assert!(c["ExposedPorts"]["53/udp"].is_object(), "{c}");
            assert!(c["Volumes"]["/data"].is_object(), "{c}");
            assert_eq!(c["StopSignal"], "SIGINT");
            assert_eq!(c["Cmd"], serde_json::json!(["echo", "from-cmd"]));
            // Base (2 layers) + ENV, LABEL, WORKDIR, RUN, EXPOSE, VOLUME, STOPSIGNAL, USER, RUN,
            // CMD; layers only for WORKDIR and the RUNs.
            let empty = history_empty(cfg);
            assert_eq!(
                empty,
                [false, false, true, true, false, false, true, true, true, true, false, true]
            );
            assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 5);
            let h = &cfg["history"][5];
            assert!(h["created_by"].as_str().unwrap().starts_with("RUN "), "{h}");
        },
    },
    Case {
        name: "ENTRYPOINT with CMD",
        files: &[],
        dockerfile: "FROM busybox\nENTRYPOINT [\"echo\", \"ep\"]\nCMD [\"default\"]\n",
        args: &[],
        runs: &[("", "ep default\n")],
        check: |_, _, cfg| {
            assert_eq!(cfg["config"]["Entrypoint"], serde_json::json!(["echo", "ep"]));
            assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["default"]));
        },
    },
    Case {
        name: "multi-stage with --target",
        files: &[],
        dockerfile: "FROM busybox AS base\n\
RUN echo base > /base\n\
FROM base AS builder\n\
RUN echo built > /artifact\n\
FROM busybox AS broken\n\
RUN exit 1\n\
FROM base AS final\n\
COPY --from=builder /artifact /copied\n\
COPY --from=broken /etc/passwd /nope\n",
        args: &["--target", "builder"],
        runs: &[],
        check: |_, _, _| {},
    },
    Case {
        name: "build args and their scopes",
        files: &[],
        dockerfile: "ARG V=global\n\
ARG FROMTAG=latest\n\
FROM busybox:${FROMTAG}\n\
RUN echo \"[$V]\" > /before\n\
ARG V\n\
ARG W=default\n\
RUN echo \"$V $W\" > /after\n\
ENV W=env-$W\n\
RUN echo $W > /env\n",
        args: &["--build-arg", "W=cli"],
        runs: &[("cat /before /after /env", "[]\nglobal cli\nenv-cli\n")],
        check: |_, _, cfg| {
            let runs: Vec<&str> = cfg["history"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|h| h["created_by"].as_str())
                .filter(|s| s.starts_with("RUN"))
                .collect();
            // The ARGs in scope are recorded in RUN's history, as Docker does.
            assert!(runs[1].contains("|2 V=global W=cli"), "{runs:?}");
        },
    },
    Case {
        name: ".dockerignore with exceptions",
        files: &[
            (".dockerignore", "*.log\n!keep.log\nsecret/\n"),
            ("a.txt", "a"),
            ("drop.log", "x"),
            ("keep.log", "k"),
            ("sub/x.log", "deep"),
            ("secret/key", "s"),
        ],
        dockerfile: "FROM busybox\nCOPY . /ctx/\n",
        args: &[],
        runs: &[("echo /ctx/* /ctx/sub/*", "/ctx/Dockerfile /ctx/a.txt /ctx/keep.log /ctx/sub /ctx/sub/x.log\n")],
        check: |_, _, _| {},
    },
    Case {
        name: "COPY --chown and --chmod",
        files: &[("f", "file"), ("d/inner", "in"), ("d/sub/deep", "deep")],
        dockerfile: "FROM busybox\n\
COPY --chown=app:staff --chmod=640 f /f\n\
COPY --chown=1000 d /d/\n\
COPY f /rootowned\n\
COPY --chmod=0755 f d/inner /multi/\n",
        args: &[],
        runs: &[(
            "stat -c '%n %u:%g %a' /f /d /d/inner /d/sub /d/sub/deep /rootowned /multi/f /multi/inner",
            "/f 1000:50 640\n/d 1000:1000 755\n/d/inner 1000:1000 644\n/d/sub 1000:1000 755\n/d/sub/deep 1000:1000 644\n/rootowned 0:0 644\n/multi/f 0:0 755\n/multi/inner 0:0 755\n",
        )],
        check: |_, _, _| {},
    },
    Case {
        name: "whiteouts from RUN rm in a later step",
        files: &[],
        dockerfile: "FROM busybox\n\
RUN echo x > /gone && mkdir -p /dir/sub && echo y > /dir/sub/f && echo z > /etc/removeme2\n\
RUN rm /gone && rm -r /dir/sub && rm /etc/removeme2 && rm /bin/busybox.nope 2>/dev/null; rm /opt/old/a.txt\n",
        args: &[],
        runs: &[(
            "test -e /gone || echo gone; test -e /dir/sub || echo sub-gone; test -d /dir && echo dir-kept; test -e /opt/old/a.txt || echo base-file-gone",
            "gone\nsub-gone\ndir-kept\nbase-file-gone\n",
        )],
        check: |_, _, cfg| {
            assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 4);
        },
    },
    Case {
        name: "heredocs",
        files: &[],
        dockerfile: "FROM busybox\n\
ARG WHO=world\n\
RUN <<EOF\n\
echo \"hello $WHO\" > /greeting\n\
echo second >> /greeting\n\
EOF\n\
COPY <<-EOT /etc/conf.txt\n\
\tline one\n\
\tline two\n\
\tEOT\n\
RUN <<'EOF' sh\n\
echo '$NOT_EXPANDED' > /literal\n\
EOF\n",
        args: &[],
        runs: &[("cat /greeting /etc/conf.txt /literal", "hello world\nsecond\nline one\nline two\n$NOT_EXPANDED\n")],
        check: |_, _, _| {},
    },
];

#[test]
fn dockerfile_table() {
    let d = daemon("build-table");
    for case in CASES {
        let ctx = context(case.files);
        std::fs::write(ctx.path().join("Dockerfile"), case.dockerfile).unwrap();
        let tag = format!("berth.test/{}:latest", unique("img"));
        let iid = ctx.path().join("iid");
        let mut args = vec!["-t", tag.as_str(), "--iidfile", iid.to_str().unwrap()];
        args.extend_from_slice(case.args);
        let target_case = case.name.starts_with("multi-stage");
        let out = build(&d, ctx.path(), &args);
        assert_eq!(
            out.code, 0,
            "case {}: build failed:\n{}\n{}",
            case.name, out.stdout, out.stderr
        );
        if target_case {
            assert!(!out.stderr.contains("RUN exit 1"), "{}", out.stderr);
            assert_eq!(run(&d, &tag, "cat /base /artifact"), "base\nbuilt\n");
            // The whole file with its default target needs the broken stage: that fails,
            // naming the step and its line.
            let out = build(&d, ctx.path(), &["-t", &tag]);
            let err = out.err();
            assert!(err.contains("RUN exit 1"), "{err}");
            assert!(err.contains("line 6"), "{err}");
            assert!(err.contains("exit code: 1"), "{err}");
            assert_clean(&d);
            continue;
        }
        let cfg = config(&d, &iid);
        for (cmd, want) in case.runs {
            assert_eq!(run(&d, &tag, cmd), *want, "case {}: {cmd}", case.name);
        }
        (case.check)(&d, &tag, &cfg);
        assert_clean(&d);
    }
}

#[test]
fn cache_hits_and_misses_from_the_changed_step() {
    let d = daemon("build-cache");
    let ctx = context(&[("a", "a1"), ("b", "b1")]);
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN echo one > /one\nCOPY a /a\nRUN cat /a > /a2\nCOPY b /b\nRUN cat /b > /b2\n",
    )
    .unwrap();
    let tag = "berth.test/cache:latest";
    let iid = ctx.path().join("iid");
    let args = ["-t", tag, "--iidfile", iid.to_str().unwrap()];
    let first = build(&d, ctx.path(), &args);
    first.ok();
    assert_eq!(
        first.stderr.matches("CACHED").count(),
        0,
        "{}",
        first.stderr
    );
    let id1 = std::fs::read_to_string(&iid).unwrap();

    // Unchanged: every step cached, the very same image.
    let t = Instant::now();
    let second = build(&d, ctx.path(), &args);
    second.ok();
    assert_eq!(
        second.stderr.matches("CACHED").count(),
        5,
        "{}",
        second.stderr
    );
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), id1);
    eprintln!("fully cached build: {:?}", t.elapsed());

    // The cache survives a berthd restart.
    let mut d = d;
    d.d.restart().unwrap();
    let third = build(&d, ctx.path(), &args);
    assert_eq!(
        third.stderr.matches("CACHED").count(),
        5,
        "{}",
        third.stderr
    );

    // One file changed: the steps before the one reading it are cached, the rest run again.
    std::fs::write(ctx.path().join("b"), "b2").unwrap();
    let fourth = build(&d, ctx.path(), &args);
    fourth.ok();
    let cached: Vec<&str> = fourth
        .stderr
        .lines()
        .zip(fourth.stderr.lines().skip(1))
        .filter(|(_, next)| next.trim() == "CACHED")
        .map(|(l, _)| l)
        .collect();
    assert_eq!(cached.len(), 3, "{}", fourth.stderr);
    assert!(cached[2].contains("RUN cat /a"), "{cached:?}");
    assert_eq!(run(&d, tag, "cat /a2 /b2"), "a1b2");

    // --no-cache runs everything.
    let fifth = build(&d, ctx.path(), &["-t", tag, "--no-cache"]);
    assert_eq!(fifth.ok().matches("CACHED").count(), 0);
    assert_eq!(
        fifth.stderr.matches("CACHED").count(),
        0,
        "{}",
        fifth.stderr
    );

    // Prune drops the cache; GC then reclaims what no image holds.
    d.berth(&d.ns, &["builder", "prune"]).ok();
    let sixth = build(&d, ctx.path(), &["-t", tag]);
    assert_eq!(
        sixth.stderr.matches("CACHED").count(),
        0,
        "{}",
        sixth.stderr
    );
    assert_clean(&d);
}

#[test]
fn stdin_dockerfile_and_tar_and_quiet() {
    let d = daemon("build-stdin");
    // A lone Dockerfile on stdin: no context.
    let mut cmd = d.berth_command(
        Some(&d.ns),
        &["build", "-q", "-t", "berth.test/stdin:1", "-"],
    );
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM busybox\nRUN echo piped > /p\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap();
    assert!(
        id.trim().starts_with("sha256:") && id.lines().count() == 1,
        "{id}"
    );
    assert_eq!(run(&d, "berth.test/stdin:1", "cat /p"), "piped\n");

    // A tar on stdin, with its Dockerfile inside.
    let ctx = context(&[
        ("Dockerfile", "FROM busybox\nCOPY f /f\n"),
        ("f", "from tar"),
    ]);
    let mut tar = tar::Builder::new(Vec::new());
    tar.append_dir_all(".", ctx.path()).unwrap();
    let bytes = tar.into_inner().unwrap();
    let mut cmd = d.berth_command(Some(&d.ns), &["build", "-t", "berth.test/stdin:2", "-"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(run(&d, "berth.test/stdin:2", "cat /f"), "from tar");
    assert_clean(&d);
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    let d = daemon("build-bad");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "host secret").unwrap();
    let outside_link = outside.path().join("secret").to_str().unwrap().to_string();
    /// Name, Dockerfile, context files, what the error output must contain.
    type BadCase<'a> = (&'a str, String, Vec<(&'a str, String)>, Vec<&'a str>);
    let cases: Vec<BadCase> = vec![
        (
            "syntax error",
            "FROM busybox\nRUN echo ok\nENV\n".into(),
            vec![],
            vec!["line 3", "ENV"],
        ),
        (
            "unknown instruction",
            "FROM busybox\nFOO bar\n".into(),
            vec![],
            vec!["dockerfile parse error line 2: unknown instruction: FOO"],
        ),
        (
            "COPY ../x",
            "FROM busybox\nCOPY ../x /x\n".into(),
            vec![],
            vec!["forbidden path outside the build context: ../x", "line 2"],
        ),
        (
            "COPY a missing file",
            "FROM busybox\nCOPY missing /x\n".into(),
            vec![],
            vec!["\"/missing\": not found", "line 2", "COPY missing /x"],
        ),
        (
            "COPY through a symlink leading out",
            "FROM busybox\nCOPY link /x\n".into(),
            vec![("@link", outside_link.clone())],
            vec!["forbidden path outside the build context: link"],
        ),
        (
            "--from naming no stage or image",
            "FROM busybox\nCOPY --from=127.0.0.1:9/nosuch /x /x\n".into(),
            vec![],
            vec!["127.0.0.1:9/nosuch"],
        ),
        (
            "a cycle between stages",
            "FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\nCOPY --from=a /y /y\n"
                .into(),
            vec![],
            vec!["circular dependency detected on stage"],
        ),
        (
            "a bad RUN --mount option",
            "FROM busybox\nRUN echo ok\nRUN --mount=type=cache,target=/c,foo=bar true\n".into(),
            vec![],
            vec!["dockerfile parse error line 3: unexpected key 'foo' in 'foo=bar'"],
        ),
        (
            "a RUN --mount tmpfs size that is no size",
            "FROM busybox\nRUN --mount=type=tmpfs,target=/t,size=lots true\n".into(),
            vec![],
            vec!["dockerfile parse error line 2: invalid size: 'lots'"],
        ),
        (
            "a RUN --mount target of /",
            "FROM busybox\nRUN --mount=type=tmpfs,target=/ true\n".into(),
            vec![],
            vec!["invalid mount target \"/\"", "line 2"],
        ),
        (
            "a RUN --mount bind of a missing context file",
            "FROM busybox\nRUN --mount=source=nope,target=/n true\n".into(),
            vec![],
            vec!["\"/nope\": not found", "line 2"],
        ),
        (
            "a RUN --mount bind through a symlink leading out",
            "FROM busybox\nRUN --mount=source=link,target=/n cat /n\n".into(),
            vec![("@link", outside_link.clone())],
            vec!["forbidden path outside the build context: link", "line 2"],
        ),
        (
            "a RUN that fails",
            "FROM busybox\nRUN echo before\nRUN echo to-stdout; echo to-stderr >&2; exit 3\n"
                .into(),
            vec![],
            vec![
                "RUN echo to-stdout; echo to-stderr >&2; exit 3",
                "line 3",
                "exit code: 3",
                "to-stdout",
                "to-stderr",
            ],
        ),
    ];
    for (name, dockerfile, files, wants) in cases {
        let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
        let ctx = context(&files);
        std::fs::write(ctx.path().join("Dockerfile"), &dockerfile).unwrap();
        let tag = "berth.test/bad:latest";
        let out = build(&d, ctx.path(), &["-t", tag]);
        let text = format!("{}{}", out.stdout, out.stderr);
        assert_ne!(out.code, 0, "{name}: succeeded:\n{text}");
        for w in wants {
            assert!(text.contains(w), "{name}: {w:?} not in:\n{text}");
        }
        assert!(!text.contains("host secret"));
        assert_eq!(
            d.ctr(&d.ns, &["images", "ls", "-q"]).ok().trim(),
            BASE,
            "{name}"
        );
        assert_clean(&d);
    }

    // A context that is not a tar.
    let mut cmd = d.berth_command(Some(&d.ns), &["build", "-t", "berth.test/bad:tar", "-"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(b"\x1f\x8b\x08\x00garbage that is no gzip stream at all");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("invalid build context"), "{err}");
    assert_clean(&d);
}

/// `berth build ARGS CONTEXT` of a context holding only `dockerfile`, to be spawned: stdout
/// to /dev/null, stderr piped. The context goes with the returned dir.
fn build_command(
    d: &NsDaemon,
    dockerfile: &str,
    args: &[&str],
) -> (std::process::Command, tempfile::TempDir) {
    let ctx = context(&[("Dockerfile", dockerfile)]);
    let mut a = vec!["build"];
    a.extend_from_slice(args);
    a.push(ctx.path().to_str().unwrap());
    let mut cmd = d.berth_command(Some(&d.ns), &a);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    (cmd, ctx)
}

#[test]
fn a_cancelled_build_leaves_nothing() {
    let d = daemon("build-cancel");
    let (mut cmd, _ctx) = build_command(
        &d,
        "FROM busybox\nRUN echo started; sleep 60\n",
        &["-t", "berth.test/cancel:1"],
    );
    // Ctrl-C's default action, even when the suite runs with SIGINT ignored (a shell's
    // background job: the ignored disposition is inherited across exec).
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let start = Instant::now();
    loop {
        let l = lines.next().expect("build output ended").unwrap();
        if l.contains("started") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30));
    }
    // Ctrl-C.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let st = child.wait().unwrap();
    assert!(!st.success());
    assert_clean(&d);
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "the RUN was not stopped"
    );
    assert_eq!(d.ctr(&d.ns, &["images", "ls", "-q"]).ok().trim(), BASE);
}

/// A base image missing from the store is pulled (from a local docker-registry, plain HTTP
/// per berthd's config); `--pull` fetches it again when the store has an older one.
#[test]
fn base_images_are_pulled_when_missing_or_asked_to() {
    use berth_integration::manager::registry::Registry;
    let reg = Registry::start().unwrap();
    let toml = format!("[registries.\"{}\"]\nplain_http = true\n", reg.addr());
    // On the host's network, to reach the registry on 127.0.0.1: the RUN steps take none.
    let d = NsDaemon {
        d: Berthd::start_with_config(&toml).unwrap(),
        ns: unique("build-pull"),
    };
    let name = format!("{}/berth/base:v1", reg.addr());
    let push = |marker: &'static str| {
        let pusher = unique("pusher");
        let img = Image::new(
            &name,
            vec![
                image::base_layer().unwrap(),
                Layer::build(&[Entry::File("marker", 0o644, marker.as_bytes().to_vec())]).unwrap(),
            ],
        )
        .unwrap();
        berth_integration::manager::tasks::import(&d, &pusher, &img).unwrap();
        d.berth(&pusher, &["images", "push", "--plain-http", &name])
            .ok();
    };
    push("first");
    let ctx = context(&[]);
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {name}\nRUN cat /marker > /seen\n"),
    )
    .unwrap();
    let out = build(
        &d,
        ctx.path(),
        &["-t", "berth.test/pulled:1", "--network", "none"],
    );
    out.ok();
    assert!(
        out.stderr.contains(&format!("pulling {name}")),
        "{}",
        out.stderr
    );
    assert_eq!(run(&d, "berth.test/pulled:1", "cat /seen"), "first");

    // A newer base in the registry: used only with --pull.
    push("second");
    let out = build(
        &d,
        ctx.path(),
        &["-t", "berth.test/pulled:2", "--network", "none"],
    );
    assert!(!out.ok().contains("pulling") && !out.stderr.contains("pulling"));
    assert_eq!(run(&d, "berth.test/pulled:2", "cat /seen"), "first");
    build(
        &d,
        ctx.path(),
        &["-t", "berth.test/pulled:3", "--pull", "--network", "none"],
    )
    .ok();
    assert_eq!(run(&d, "berth.test/pulled:3", "cat /seen"), "second");
    assert_clean(&d);
}

/// Independent stages build at the same time: two 2-second RUNs take about 2 seconds.
#[test]
fn independent_stages_build_in_parallel() {
    let d = daemon("build-par");
    let ctx = context(&[]);
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox AS a\nRUN sleep 2; echo a > /a\n\
         FROM busybox AS b\nRUN sleep 2; echo b > /b\n\
         FROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n",
    )
    .unwrap();
    let t = Instant::now();
    build(&d, ctx.path(), &["-t", "berth.test/par:1"]).ok();
    let took = t.elapsed();
    assert!(took < Duration::from_millis(3500), "took {took:?}");
    assert_eq!(run(&d, "berth.test/par:1", "cat /a /b"), "a\nb\n");
    assert_clean(&d);
}

/// The terminal's text after the last `[+] Building` header (the final frame and what follows
/// it), escape sequences and carriage returns removed, as lines.
fn final_frame(tty: &str) -> Vec<String> {
    let at = tty.rfind("[+] Building").unwrap_or(0);
    let mut text = String::new();
    let mut chars = tty[at..].chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // CSI: ESC [ params final-byte.
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => text.push(c),
        }
    }
    text.lines().map(str::to_string).collect()
}

/// `berth build --progress tty` on a terminal: a `[+] Building` header repainted in place
/// (cursor up), a running RUN's output shown under it, and a final frame with each step's
/// state (done with its time, CACHED on a rebuild, ERROR for a failing step, whose output
/// then follows in full); `--progress plain` on the same terminal writes no escape codes.
#[test]
fn tty_progress_repaints_steps_in_place() {
    let d = daemon("build-tty");
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\nCOPY f /f\nRUN echo making it; sleep 1; echo made > /m\n",
        ),
        ("f", "x"),
    ]);
    let c = ctx.path().to_str().unwrap();
    let (code, tty, err) = d.berth_on_tty(
        &d.ns,
        &["build", "--progress", "tty", "-t", "berth.test/tty:1", c],
    );
    assert_eq!(code, 0, "{tty}{err}");
    // A repaint moves the cursor up over the frame before.
    assert!(
        tty.contains("\x1b[2A") || tty.contains("\x1b[3A") || tty.contains("\x1b[4A"),
        "{tty:?}"
    );
    assert!(tty.contains("=> => # making it"), "{tty:?}");
    let last = final_frame(&tty);
    assert_eq!(
        last[0].split(' ').next_back(),
        Some("FINISHED"),
        "{last:#?}"
    );
    assert!(last[0].contains("(3/3)"), "{last:#?}");
    let step = |lines: &[String], what: &str| -> String {
        lines
            .iter()
            .find(|l| l.contains(what))
            .cloned()
            .unwrap_or_else(|| panic!("no {what} in {lines:#?}"))
    };
    for s in ["FROM", "COPY f /f", "RUN echo making it"] {
        let l = step(&last, s);
        // Done: no state word, its time at the end.
        assert!(l.starts_with(" => [stage-0 "), "{l:?}");
        assert!(l.trim_end().ends_with('s'), "{l:?}");
    }
    // The tail collapsed when the step was done.
    assert!(!last.iter().any(|l| l.contains("=> => #")), "{last:#?}");
    assert!(
        last.iter().any(|l| l.starts_with("writing image sha256:")),
        "{last:#?}"
    );
    assert!(
        last.contains(&"naming to berth.test/tty:1 done".to_string()),
        "{last:#?}"
    );

    // Again: the steps after FROM come from the cache.
    let (code, tty, err) = d.berth_on_tty(&d.ns, &["build", "--progress", "tty", c]);
    assert_eq!(code, 0, "{tty}{err}");
    let last = final_frame(&tty);
    assert!(step(&last, "COPY f /f").starts_with(" => CACHED [stage-0 2/3]"));
    assert!(step(&last, "RUN echo making it").starts_with(" => CACHED [stage-0 3/3]"));

    // A failing step: ERROR, and its output in full after the final frame.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN echo one; echo two; echo three; echo four; echo five; \
         echo six; echo seven; exit 3\n",
    )
    .unwrap();
    let (code, tty, _) = d.berth_on_tty(&d.ns, &["build", "--progress", "tty", c]);
    assert_ne!(code, 0, "{tty}");
    let last = final_frame(&tty);
    assert!(step(&last, "RUN echo one").starts_with(" => ERROR [stage-0 2/2]"));
    let report = last.join("\n");
    assert!(
        report.contains("------\n > [stage-0 2/2] RUN echo one;")
            && report.contains(":\none\ntwo\nthree\nfour\nfive\nsix\nseven\n------\n"),
        "{report}"
    );
    assert!(report.contains("failed to solve:"), "{report}");

    // Plain on the same terminal: the lines as they come, no escape codes.
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox\nCOPY f /f\n").unwrap();
    let (code, tty, err) = d.berth_on_tty(&d.ns, &["build", "--progress", "plain", c]);
    assert_eq!(code, 0, "{tty}{err}");
    assert!(!tty.contains('\x1b'), "{tty:?}");
    assert!(
        tty.contains("[stage-0 2/2] COPY f /f\r\n  CACHED"),
        "{tty:?}"
    );
    assert_clean(&d);
}

/// `RUN --mount=type=cache`: the directory outlives builds (also `--no-cache` ones), is made
/// with its mode and owner (or seeded from a stage), is not part of the image, and `berth
/// builder prune` drops it.
#[test]
fn run_mount_cache_persists_across_builds() {
    let d = daemon("build-mcache");
    let ctx = context(&[]);
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox AS seed\n\
         RUN mkdir /seed && echo seeded > /seed/f\n\
         FROM busybox\n\
         RUN --mount=type=cache,id=seeded,target=/s,from=seed,source=/seed cat /s/f > /seededf\n\
         RUN --mount=type=cache,target=/var/cache/app echo run >> /var/cache/app/log && cat /var/cache/app/log > /seen\n\
         RUN --mount=type=cache,id=owned,target=/c2,uid=1000,gid=50,mode=0700 stat -c '%u:%g %a' /c2 > /c2stat\n\
         RUN --mount=type=cache,id=owned,target=/c3,sharing=locked touch /c3/x && ls /c3 > /c3ls\n",
    )
    .unwrap();
    let tag = "berth.test/mcache:1";
    build(&d, ctx.path(), &["-t", tag]).ok();
    assert_eq!(
        run(&d, tag, "cat /seededf /seen /c2stat /c3ls"),
        "seeded\nrun\n1000:50 700\nx\n"
    );
    // Not in the image: no mount point, no cache content.
    assert_eq!(
        run(
            &d,
            tag,
            "test -e /var/cache || echo no-var-cache; test -e /c2 || echo no-c2"
        ),
        "no-var-cache\nno-c2\n"
    );
    let dirs = d.d.root().join("build-cache-mounts").join(&d.ns);
    assert!(dirs.is_dir(), "{}", dirs.display());

    // --no-cache runs the RUN again, on the same cache directory.
    build(&d, ctx.path(), &["-t", tag, "--no-cache"]).ok();
    assert_eq!(run(&d, tag, "cat /seen"), "run\nrun\n");

    // Prune removes it; the next build starts empty.
    d.berth(&d.ns, &["builder", "prune"]).ok();
    let left: Vec<_> = std::fs::read_dir(&dirs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !n.to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    build(&d, ctx.path(), &["-t", tag]).ok();
    assert_eq!(run(&d, tag, "cat /seen"), "run\n");
    assert_clean(&d);
}

/// `RUN --mount=type=bind`: a context file or directory read without COPY, leaving no trace in
/// the image; `rw` writes are discarded; a stage's file; a change to the bound file misses the
/// cache.
#[test]
fn run_mount_bind_reads_without_copying() {
    let d = daemon("build-mbind");
    let ctx = context(&[("data.txt", "from context\n"), ("dir/inner", "in\n")]);
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox AS src\n\
         RUN echo staged > /s\n\
         FROM busybox\n\
         RUN --mount=type=bind,source=data.txt,target=/mnt/data.txt cat /mnt/data.txt > /copied\n\
         RUN --mount=target=/ctx cat /ctx/dir/inner > /inner && (echo x > /ctx/new 2>/dev/null || echo read-only > /ro)\n\
         RUN --mount=target=/ctx,rw echo changed > /ctx/data.txt && cat /ctx/data.txt > /rwseen\n\
         RUN --mount=type=bind,from=src,source=/s,target=/x cat /x > /fromstage\n",
    )
    .unwrap();
    let tag = "berth.test/mbind:1";
    build(&d, ctx.path(), &["-t", tag]).ok();
    assert_eq!(
        run(&d, tag, "cat /copied /inner /ro /rwseen /fromstage"),
        "from context\nin\nread-only\nchanged\nstaged\n"
    );
    assert_eq!(
        run(
            &d,
            tag,
            "test -e /mnt || echo no-mnt; test -e /ctx || echo no-ctx; test -e /x || echo no-x"
        ),
        "no-mnt\nno-ctx\nno-x\n"
    );
    // The rw mount's write stayed in the build.
    assert_eq!(
        std::fs::read_to_string(ctx.path().join("data.txt")).unwrap(),
        "from context\n"
    );
    assert!(!ctx.path().join("new").exists());
    // No layer holds a mount point or a bound file.
    let paths = layer_paths(&d, tag);
    assert!(paths.iter().any(|p| p == "copied"), "{paths:?}");
    for p in &paths {
        assert!(
            !p.starts_with("mnt") && !p.starts_with("ctx") && p != "x" && !p.ends_with("data.txt"),
            "{p} in {paths:?}"
        );
    }

    // Unchanged: cached. The bound file changed: its RUN runs again.
    let again = build(&d, ctx.path(), &["-t", tag]);
    assert_eq!(
        again.stderr.matches("CACHED").count(),
        5,
        "{}",
        again.stderr
    );
    std::fs::write(ctx.path().join("data.txt"), "edited\n").unwrap();
    let third = build(&d, ctx.path(), &["-t", tag]);
    let ran: Vec<&str> = third
        .stderr
        .lines()
        .zip(third.stderr.lines().skip(1))
        .filter(|(_, next)| next.trim_start().starts_with("DONE"))
        .map(|(l, _)| l)
        .filter(|l| l.contains("RUN"))
        .collect();
    assert!(
        ran.iter().any(|l| l.contains("cat /mnt/data.txt")),
        "{}",
        third.stderr
    );
    assert_eq!(run(&d, tag, "cat /copied"), "edited\n");
    assert_clean(&d);
}

/// `RUN --mount=type=tmpfs`: an empty tmpfs of the given size, gone after the step.
#[test]
fn run_mount_tmpfs_is_empty_and_gone() {
    let d = daemon("build-mtmpfs");
    let ctx = context(&[]);
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\n\
         WORKDIR /w\n\
         RUN --mount=type=tmpfs,target=scratch,size=1m ls -A /w/scratch > /ls && echo hi > scratch/f && grep ' /w/scratch ' /proc/mounts > /m\n\
         RUN test -e /w/scratch || echo gone > /gone\n",
    )
    .unwrap();
    let tag = "berth.test/mtmpfs:1";
    build(&d, ctx.path(), &["-t", tag]).ok();
    let out = run(&d, tag, "cat /ls /gone; cat /m");
    assert!(out.starts_with("gone\n"), "{out}");
    assert!(out.contains(" /w/scratch tmpfs "), "{out}");
    assert!(out.contains("size=1024k"), "{out}");
    assert_clean(&d);
}

/// The paths (without a leading `./` or `/`) of every entry of every layer of an image, read
/// from `berth images export`.
fn layer_paths(d: &NsDaemon, image: &str) -> Vec<String> {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    d.berth(
        &d.ns,
        &["images", "export", archive.to_str().unwrap(), image],
    )
    .ok();
    let mut blobs = std::collections::BTreeMap::new();
    let mut t = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    for e in t.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        blobs.insert(p, data);
    }
    let index: Value = serde_json::from_slice(&blobs["index.json"]).unwrap();
    let blob = |digest: &str| &blobs[&format!("blobs/sha256/{}", &digest["sha256:".len()..])];
    let m: Value =
        serde_json::from_slice(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let mut out = Vec::new();
    for l in m["layers"].as_array().unwrap() {
        let gz = flate2::read::GzDecoder::new(&blob(l["digest"].as_str().unwrap())[..]);
        let mut t = tar::Archive::new(gz);
        for e in t.entries().unwrap() {
            let e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            out.push(
                p.trim_start_matches("./")
                    .trim_start_matches('/')
                    .trim_end_matches('/')
                    .to_string(),
            );
        }
    }
    out
}

// ---- the same Dockerfiles through Debian's `buildah bud` ----

/// One entry of a flattened image tree: type, mode, uid, gid, size, content digest (a
/// symlink's target; a hard link is listed as the file it links to).
type Tree = std::collections::BTreeMap<String, String>;

/// Applies an image's layers (tar, gzip or not) in order, with OCI whiteouts, to a listing.
fn flatten(layers: &[Vec<u8>]) -> Tree {
    use sha2::Digest as _;
    use std::io::Read;
    let mut tree = Tree::new();
    for raw in layers {
        let data: Vec<u8> = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut v = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut v)
                .unwrap();
            v
        } else {
            raw.clone()
        };
        let mut t = tar::Archive::new(&data[..]);
        for e in t.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let p = p
                .trim_start_matches("./")
                .trim_start_matches('/')
                .trim_end_matches('/')
                .to_string();
            if p.is_empty() || p == "." {
                continue;
            }
            let (dir, base) = match p.rsplit_once('/') {
                Some((d, b)) => (format!("{d}/"), b.to_string()),
                None => (String::new(), p.clone()),
            };
            if base == ".wh..wh..opq" {
                tree.retain(|k, _| !(k.starts_with(&dir) && k.len() > dir.len()));
                continue;
            }
            if let Some(gone) = base.strip_prefix(".wh.") {
                let gone = format!("{dir}{gone}");
                let sub = format!("{gone}/");
                tree.retain(|k, _| *k != gone && !k.starts_with(&sub));
                continue;
            }
            let h = e.header();
            let mode = h.mode().unwrap() & 0o7777;
            let (uid, gid) = (h.uid().unwrap(), h.gid().unwrap());
            let kind = h.entry_type();
            let desc = if kind.is_hard_link() {
                let target = e
                    .link_name()
                    .unwrap()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let target = target.trim_start_matches("./").trim_start_matches('/');
                tree.get(target)
                    .cloned()
                    .unwrap_or_else(|| format!("hardlink to {target}?"))
            } else if kind.is_symlink() {
                let target = e
                    .link_name()
                    .unwrap()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                format!("symlink {mode:o} {uid}:{gid} -> {target}")
            } else if kind.is_dir() {
                // A directory seen again (a later layer touching it) takes the new metadata.
                format!("dir {mode:o} {uid}:{gid}")
            } else if kind.is_file() {
                let mut content = Vec::new();
                e.read_to_end(&mut content).unwrap();
                let d = sha2::Sha256::digest(&content);
                let hexd: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
                format!("file {mode:o} {uid}:{gid} {} sha256:{hexd}", content.len())
            } else {
                format!("{kind:?} {mode:o} {uid}:{gid}")
            };
            if !kind.is_dir() {
                // A non-directory replaces whatever was there, a directory's children too.
                let sub = format!("{p}/");
                tree.retain(|k, _| !k.starts_with(&sub));
            }
            tree.insert(p, desc);
        }
    }
    tree
}

/// Reads an image: its config document and its layers' bytes, from a manifest and a way to
/// fetch a blob by digest.
fn read_image(manifest: &Value, blob: &dyn Fn(&str) -> Vec<u8>) -> (Value, Vec<Vec<u8>>) {
    let cfg: Value =
        serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| blob(l["digest"].as_str().unwrap()))
        .collect();
    (cfg, layers)
}

/// A berth image, from `berth images export`.
fn berth_image(d: &NsDaemon, image: &str) -> (Value, Vec<Vec<u8>>) {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    d.berth(
        &d.ns,
        &["images", "export", archive.to_str().unwrap(), image],
    )
    .ok();
    let mut blobs = std::collections::BTreeMap::new();
    let mut t = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    for e in t.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        blobs.insert(p, data);
    }
    let index: Value = serde_json::from_slice(&blobs["index.json"]).unwrap();
    let get =
        |dg: &str| blobs[&format!("blobs/sha256/{}", dg.trim_start_matches("sha256:"))].clone();
    let m: Value =
        serde_json::from_slice(&get(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    read_image(&m, &get)
}

/// buildah on private vfs storage in a temp dir; its images go with the guard.
struct Buildah {
    dir: tempfile::TempDir,
}

impl Buildah {
    fn cmd(&self, args: &[&str]) -> Out {
        let root = self.dir.path().join("root");
        let run = self.dir.path().join("run");
        let out = std::process::Command::new("buildah")
            .arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(&run)
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("BUILDAH_ISOLATION", "chroot")
            .output()
            .expect("running buildah");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// An image of buildah's storage: pushed to a `dir:` layout and read back.
    fn image(&self, name: &str) -> (Value, Vec<Vec<u8>>) {
        let out = self.dir.path().join(format!("dir-{}", unique("x")));
        let dest = format!("dir:{}", out.display());
        let r = self.cmd(&["push", "-q", name, &dest]);
        assert_eq!(r.code, 0, "buildah push: {}", r.stderr);
        let m: Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        let get = |dg: &str| std::fs::read(out.join(dg.trim_start_matches("sha256:"))).unwrap();
        let img = read_image(&m, &get);
        let _ = std::fs::remove_dir_all(&out);
        img
    }
}

impl Drop for Buildah {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-a"]);
        let _ = self.cmd(&["rmi", "-a", "-f"]);
        // Anything a failed RUN left mounted under the temp dir.
        for m in mounts_under(self.dir.path()).iter().rev() {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// The config fields both builders set, normalized: buildah's own label
/// (`io.buildah.version`) dropped, zero-valued healthcheck fields and empty maps omitted.
fn config_fields(cfg: &Value) -> Value {
    let c = &cfg["config"];
    let mut out = serde_json::Map::new();
    for k in [
        "User",
        "ExposedPorts",
        "Env",
        "Entrypoint",
        "Cmd",
        "Volumes",
        "WorkingDir",
        "Labels",
        "StopSignal",
        "Healthcheck",
        "Shell",
        "OnBuild",
    ] {
        let mut v = c[k].clone();
        if k == "Labels" {
            if let Some(m) = v.as_object_mut() {
                m.remove("io.buildah.version");
            }
        }
        if k == "Healthcheck" {
            if let Some(m) = v.as_object_mut() {
                m.retain(|_, x| !(x.is_null() || x.as_u64() == Some(0)));
            }
        }
        let empty = v.is_null()
            || v.as_object().is_some_and(|m| m.is_empty())
            || v.as_array().is_some_and(|a| a.is_empty())
            || v.as_str() == Some("");
        if !empty {
            out.insert(k.to_string(), v);
        }
    }
    Value::Object(out)
}

/// What buildah (1.28, chroot isolation) puts in an image on its own after a RUN, left out
/// of the comparison: the empty `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` it
/// binds its own files over, and `/run` with `/run/.containerenv`. (The `/dev`, `/proc` and
/// `/sys` mount points both leave, and they are compared.)
fn buildah_own(path: &str) -> bool {
    matches!(
        path,
        "run" | "run/.containerenv" | "etc/hosts" | "etc/resolv.conf" | "etc/hostname"
    )
}

/// Name, context files, Dockerfile.
type CmpCase = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

const BUILDAH_CASES: &[CmpCase] = &[
    (
        "COPY --chown and --chmod",
        &[("f", "file"), ("d/inner", "in"), ("d/sub/deep", "deep")],
        "FROM busybox\n\
COPY --chown=app:staff --chmod=640 f /f\n\
COPY --chown=1000 d /d/\n\
COPY f /rootowned\n\
COPY --chmod=0755 f d/inner /multi/\n",
    ),
    (
        "RUN rm whiteouts",
        &[],
        "FROM busybox\n\
RUN echo x > /gone && mkdir -p /dir/sub && echo y > /dir/sub/f && echo z > /etc/removeme2 && chmod 600 /etc/removeme2\n\
RUN rm /gone && rm -r /dir/sub && rm /etc/removeme2; rm /opt/old/a.txt; chown 1000:50 /dir\n",
    ),
    (
        "config instructions",
        &[],
        "FROM busybox\n\
ENV A=1 B=\"two words\"\n\
LABEL l=v other=\"x y\"\n\
WORKDIR /w/sub\n\
RUN echo $A > a\n\
EXPOSE 80 53/udp\n\
VOLUME /data\n\
STOPSIGNAL SIGINT\n\
USER 1000:50\n\
HEALTHCHECK --interval=30s --timeout=5s --retries=2 CMD [\"true\"]\n\
ENTRYPOINT [\"echo\", \"ep\"]\n\
CMD [\"default\"]\n",
    ),
    (
        "multi-stage",
        &[("src.txt", "source")],
        "FROM busybox AS build\n\
COPY src.txt /in.txt\n\
RUN cat /in.txt /in.txt > /artifact && mkdir -p /out/bin && cp /artifact /out/bin/tool && chmod 751 /out/bin/tool\n\
FROM busybox\n\
COPY --from=build /out /opt/out\n\
COPY --from=build --chown=1000:50 /artifact /home/app/\n\
CMD [\"/opt/out/bin/tool\"]\n",
    ),
];

/// The same Dockerfiles built by berth and by Debian's `buildah bud --isolation chroot`
/// (from the same base, exported from berthd) give the same file trees — path, type, mode,
/// owner, size, content digest, mtimes ignored — and the same config fields.
#[test]
fn same_images_as_buildah() {
    if std::process::Command::new("buildah")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: buildah is not installed (hack/setup.sh installs it)");
        return;
    }
    // One layer without hard links: containers/storage, as Docker, applies a hard link
    // entry's mode to the file it links to, and the shared fixture's base layer writes its
    // link as 0644 (berth keeps the file's 0755).
    let d = NsDaemon {
        d: Berthd::start_in_netns(&[]).unwrap(),
        ns: unique("build-buildah"),
    };
    let mut entries = vec![
        Entry::Dir("bin", 0o755),
        Entry::File("bin/busybox", 0o755, std::fs::read("/bin/busybox").unwrap()),
        Entry::Symlink("bin/sh", "busybox"),
    ];
    for a in APPLETS {
        entries.push(Entry::Symlink(a, "busybox"));
    }
    entries.extend([
        Entry::Dir("etc", 0o755),
        Entry::File(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n".to_vec(),
        ),
        Entry::File(
            "etc/group",
            0o644,
            b"root:x:0:\napp:x:1000:\nstaff:x:50:\n".to_vec(),
        ),
        Entry::Dir("opt", 0o755),
        Entry::Dir("opt/old", 0o755),
        Entry::File("opt/old/a.txt", 0o644, b"old\n".to_vec()),
        Entry::Dir("tmp", 0o1777),
    ]);
    let img = Image::with_config(
        BASE,
        vec![Layer::build(&entries).unwrap()],
        serde_json::json!({"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}),
    )
    .unwrap();
    berth_integration::manager::tasks::import(&d, &d.ns, &img).unwrap();
    let ba = Buildah {
        dir: tempfile::Builder::new()
            .prefix("berth-buildah-")
            .tempdir_in("/var/tmp")
            .unwrap(),
    };
    // The base: berth's busybox, exported and pulled into buildah's storage.
    let base_tar = ba.dir.path().join("base.tar");
    d.berth(
        &d.ns,
        &["images", "export", base_tar.to_str().unwrap(), BASE],
    )
    .ok();
    let pulled = ba.cmd(&["pull", "-q", &format!("oci-archive:{}", base_tar.display())]);
    assert_eq!(pulled.code, 0, "buildah pull: {}", pulled.stderr);
    let id = pulled
        .stdout
        .trim()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let tagged = ba.cmd(&["tag", &id, BASE]);
    assert_eq!(tagged.code, 0, "buildah tag: {}", tagged.stderr);

    let mut failures = Vec::new();
    for (name, files, dockerfile) in BUILDAH_CASES {
        let ctx = context(files);
        std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
        let tag = format!("berth.test/{}:latest", unique("cmp"));
        build(&d, ctx.path(), &["-t", &tag]).ok();
        let b = ba.cmd(&[
            "bud",
            "--isolation",
            "chroot",
            "--pull=never",
            "--format",
            "docker",
            "-q",
            "-t",
            &tag,
            ctx.path().to_str().unwrap(),
        ]);
        assert_eq!(
            b.code, 0,
            "{name}: buildah bud:\n{}\n{}",
            b.stdout, b.stderr
        );
        let (bcfg, blayers) = berth_image(&d, &tag);
        let (hcfg, hlayers) = ba.image(&tag);
        let mut ours = flatten(&blayers);
        let mut theirs = flatten(&hlayers);
        let own: Vec<&String> = theirs.keys().filter(|k| buildah_own(k)).collect();
        eprintln!("{name}: left out of buildah's: {own:?}");
        ours.retain(|k, _| !buildah_own(k));
        theirs.retain(|k, _| !buildah_own(k));
        let keys: std::collections::BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
        for k in keys {
            let (a, b) = (ours.get(k), theirs.get(k));
            if a != b {
                failures.push(format!("{name}: /{k}: berth {a:?}, buildah {b:?}"));
            }
        }
        let (a, b) = (config_fields(&bcfg), config_fields(&hcfg));
        if a != b {
            failures.push(format!("{name}: config\n  berth   {a}\n  buildah {b}"));
        }
        eprintln!("{name}: {} paths compared", ours.len());
    }
    assert!(failures.is_empty(), "differences:\n{}", failures.join("\n"));
    assert_clean(&d);
}

/// A one-thread HTTP server on 127.0.0.1 for ADD <url>: `/files/NAME` answers `files[NAME]`
/// with a fixed Last-Modified, anything else 404. Stops with the test process.
fn http_files(files: Vec<(&'static str, Vec<u8>)>) -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&b[..n]),
                }
            }
            let line = String::from_utf8_lossy(&req)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let found = path
                .strip_prefix("/files/")
                .and_then(|n| files.iter().find(|(f, _)| *f == n));
            let _ = match found {
                Some((_, body)) => s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\
                             Last-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|_| s.write_all(body)),
                None => s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
            };
        }
    });
    port
}

#[test]
fn add_fetches_urls_checks_checksums_and_never_unpacks() {
    // No RUN: nothing joins a network; the files are served on the host's 127.0.0.1.
    let d = daemon_on_host("build-add-url");
    let layer = image::Layer::build(&[image::Entry::File("inside", 0o644, b"x".to_vec())]).unwrap();
    let tar_digest = layer.diff_id.clone();
    let tar = layer.tar;
    let port = http_files(vec![
        ("hello.txt", b"hello from far\n".to_vec()),
        ("data.tar", tar),
    ]);
    let url = |n: &str| format!("http://127.0.0.1:{port}/files/{n}");
    let ctx = context(&[]);
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM busybox\nADD {} /srv/\nADD --checksum={tar_digest} {} /srv/\nADD --chmod=644 {} /srv/renamed.txt\n",
            url("hello.txt"),
            url("data.tar"),
            url("hello.txt"),
        ),
    )
    .unwrap();
    let tag = "berth.test/add-url:1";
    build(&d, ctx.path(), &["-t", tag]).ok();
    // Named after the URL, mode 0600, the answer's Last-Modified (1445412480) as its time;
    // a tar stays a file; --chmod applies.
    let out = run(
        &d,
        tag,
        "cat /srv/hello.txt; stat -c '%n %a %Y' /srv/hello.txt /srv/renamed.txt; \
         test -f /srv/data.tar && echo tar-is-a-file",
    );
    assert_eq!(
        out,
        "hello from far\n/srv/hello.txt 600 1445412480\n/srv/renamed.txt 644 1445412480\ntar-is-a-file\n"
    );
    // Unchanged content: the rebuild is cached.
    let again = build(&d, ctx.path(), &["-t", tag]);
    assert_eq!(
        again.stderr.matches("CACHED").count(),
        3,
        "{}",
        again.stderr
    );

    // A wrong checksum, a missing file, a URL with no file name, a git URL: clear errors.
    let bad = |line: String, want: &str| {
        std::fs::write(
            ctx.path().join("Dockerfile"),
            format!("FROM busybox\n{line}\n"),
        )
        .unwrap();
        let out = build(&d, ctx.path(), &["-t", "berth.test/add-url:bad"]);
        assert!(out.err().contains(want), "{line}: {}", out.stderr);
    };
    let zero = format!("sha256:{}", "0".repeat(64));
    bad(
        format!("ADD --checksum={zero} {} /x", url("hello.txt")),
        "digest mismatch",
    );
    bad(format!("ADD {} /x", url("missing")), "404");
    bad(
        format!("ADD http://127.0.0.1:{port}/ /x"),
        "cannot determine a file name",
    );
    bad("ADD git@example.invalid:x/y.git /x".to_string(), "not git");
    assert!(d
        .berth(&d.ns, &["images", "ls"])
        .ok()
        .lines()
        .all(|l| !l.contains("add-url:bad")));
    assert_clean(&d);
}

#[test]
fn a_short_tag_is_run_and_removed_by_its_short_name() {
    let d = daemon("build-short");
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nCMD [\"echo\", \"short-name\"]\n",
    )]);
    build(&d, ctx.path(), &["-t", "berthtest/short:1"]).ok();
    // Stored under Docker's full name, as `docker build` and nerdctl store it...
    let ls = d.berth(&d.ns, &["images", "ls"]);
    assert!(
        ls.ok().contains("docker.io/berthtest/short:1"),
        "{}",
        ls.stdout
    );
    // ... and found by the name the user gave.
    assert_eq!(run(&d, "berthtest/short:1", ""), "short-name\n");
    d.berth(&d.ns, &["images", "rm", "berthtest/short:1"]).ok();
    let ls = d.berth(&d.ns, &["images", "ls"]);
    assert!(!ls.ok().contains("berthtest/short"), "{}", ls.stdout);
    let id = unique("b");
    let gone = d.berth(&d.ns, &["run", "--rm", "berthtest/short:1", &id]);
    assert!(gone.err().contains("berthtest/short:1"), "{}", gone.stderr);
}

// ---- RUN's network ----

/// A TCP server of the test's in berthd's network namespace, on every address there (the
/// bridges' gateways included): answers each connection's first line with `pong <line>` and
/// reports the peer's address and the line.
fn pong_server(d: &NsDaemon) -> (u16, std::sync::mpsc::Receiver<(std::net::IpAddr, String)>) {
    let ns = berth_network::netns::Netns::from_path(d.netns().unwrap());
    let l = ns
        .run(|| std::net::TcpListener::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Write;
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let peer = s.peer_addr().unwrap().ip();
            let mut line = String::new();
            let _ = BufReader::new(&s).read_line(&mut line);
            let line = line.trim().to_string();
            let _ = s.write_all(format!("pong {line}\n").as_bytes());
            drop(s);
            if tx.send((peer, line)).is_err() {
                break;
            }
        }
    });
    (port, rx)
}

/// The network's subnet and gateway (`berth network inspect`).
fn subnet_of(d: &NsDaemon, net: &str) -> (String, String) {
    let n = d.berth(&d.ns, &["network", "inspect", net]).json()[0].clone();
    let c = &n["IPAM"]["Config"][0];
    (
        c["Subnet"].as_str().unwrap().to_string(),
        c["Gateway"].as_str().unwrap().to_string(),
    )
}

/// The IPv4 address of `ifname` in `ip -o -4 addr show` output, without its prefix length.
fn address_in(addrs: &str, ifname: &str) -> Option<String> {
    addrs.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&ifname) && f.get(2) == Some(&"inet"))
            .then(|| f[3].split('/').next().unwrap().to_string())
    })
}

/// Whether `ip` (a.b.c.d) is in `subnet` (a.b.c.d/n).
fn in_subnet(ip: &str, subnet: &str) -> bool {
    let (net, bits) = subnet.split_once('/').unwrap();
    let a: std::net::Ipv4Addr = ip.parse().unwrap();
    let n: std::net::Ipv4Addr = net.parse().unwrap();
    let bits: u32 = bits.parse().unwrap();
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    u32::from(a) & mask == u32::from(n) & mask
}

#[test]
fn run_steps_join_the_bridge_by_default_and_leave_nothing_of_it() {
    let d = daemon("build-net");
    let (port, served) = pong_server(&d);
    let (subnet, gateway) = subnet_of(&d, "bridge");
    let ctx = context(&[]);
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM busybox\n\
             RUN ip -o -4 addr show > /addrs && cp /etc/hosts /hosts-seen \
                 && hostname > /hostname-seen \
                 && echo hello | nc {gateway} {port} > /reply \
                 && echo 10.9.9.9 added-by-run >> /etc/hosts && echo nameserver 10.9.9.9 >> /etc/resolv.conf\n"
        ),
    )
    .unwrap();
    let tag = "berth.test/net:bridge";
    build(&d, ctx.path(), &["-t", tag]).ok();

    // The step had eth0 on the bridge's subnet and reached the test's server on the gateway,
    // which saw it come from that address; its /etc/hosts named it there.
    let addrs = run(&d, tag, "cat /addrs");
    let ip = address_in(&addrs, "eth0").unwrap_or_else(|| panic!("no eth0 address:\n{addrs}"));
    assert!(in_subnet(&ip, &subnet), "{ip} is not in {subnet}");
    assert_eq!(run(&d, tag, "cat /reply"), "pong hello\n");
    let (peer, line) = served.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((peer.to_string(), line.as_str()), (ip.clone(), "hello"));
    let hosts = run(&d, tag, "cat /hosts-seen");
    assert!(
        hosts
            .lines()
            .any(|l| l.starts_with(&ip) && l.contains("buildkitsandbox")),
        "{hosts}"
    );
    assert_eq!(run(&d, tag, "cat /hostname-seen"), "buildkitsandbox\n");

    // hosts, resolv.conf and hostname were bound over the rootfs: neither the files nor what
    // the step wrote into them are in the image. A container gets its own.
    let paths = layer_paths(&d, tag);
    for f in ["etc/hosts", "etc/resolv.conf", "etc/hostname"] {
        assert!(
            !paths.iter().any(|p| p == f),
            "{f} is in a layer: {paths:?}"
        );
    }
    let etc = run(&d, tag, "ls /etc");
    assert!(etc.contains("passwd"), "{etc}");
    for f in ["hosts", "resolv.conf", "hostname"] {
        assert!(
            !etc.lines().any(|l| l == f),
            "/etc/{f} is in the image: {etc}"
        );
    }
    let id = unique("c");
    let hosts = d
        .berth(
            &d.ns,
            &[
                "run",
                "--rm",
                "--net",
                "bridge",
                tag,
                &id,
                "cat",
                "/etc/hosts",
            ],
        )
        .ok()
        .to_string();
    assert!(!hosts.contains("added-by-run"), "{hosts}");
    assert!(hosts.contains(id.get(..12).unwrap_or(&id)), "{hosts}");

    // After the build: no veth, netns, attachment, address lease or rule of the step.
    assert_clean(&d);

    // The network is not part of the cache key (as Docker's): all cached under none.
    let again = build(&d, ctx.path(), &["-t", tag, "--network", "none"]);
    assert_eq!(
        again.stderr.matches("CACHED").count(),
        1,
        "{}",
        again.stderr
    );

    // --network none: only lo; host names of its own are not bound.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN ip -o link show | cut -d: -f2 > /links; ls /etc > /etc-seen\n",
    )
    .unwrap();
    build(
        &d,
        ctx.path(),
        &["-t", "berth.test/net:none", "--network", "none"],
    )
    .ok();
    assert_eq!(run(&d, "berth.test/net:none", "cat /links"), " lo\n");
    let etc = run(&d, "berth.test/net:none", "cat /etc-seen");
    assert!(
        etc.contains("passwd") && !etc.contains("hosts") && !etc.contains("resolv.conf"),
        "{etc}"
    );
    assert_clean(&d);
}

#[test]
fn run_steps_join_a_named_network_and_bad_networks_are_named() {
    let d = daemon("build-netname");
    let net = unique("bn");
    d.berth(
        &d.ns,
        &["network", "create", "--subnet", "10.213.7.0/24", &net],
    )
    .ok();
    let (port, served) = pong_server(&d);
    let ctx = context(&[]);
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM busybox\nRUN ip -o -4 addr show > /addrs && echo named | nc 10.213.7.1 {port} > /reply\nRUN false\n"
        ),
    )
    .unwrap();
    // The second step fails: its network is released all the same.
    let out = build(
        &d,
        ctx.path(),
        &["-t", "berth.test/net:named", "--network", &net],
    );
    assert!(out.err().contains("exit code: 1"), "{}", out.stderr);
    assert_clean(&d);
    let (peer, line) = served.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(in_subnet(&peer.to_string(), "10.213.7.0/24"), "{peer}");
    assert_eq!(line, "named");
    // The network can go now that no step is on it.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN ip -o -4 addr show > /addrs\n",
    )
    .unwrap();
    build(
        &d,
        ctx.path(),
        &["-t", "berth.test/net:named", "--network", &net],
    )
    .ok();
    let addrs = run(&d, "berth.test/net:named", "cat /addrs");
    let ip = address_in(&addrs, "eth0").unwrap_or_else(|| panic!("no eth0 address:\n{addrs}"));
    assert!(in_subnet(&ip, "10.213.7.0/24"), "{ip}");
    d.berth(&d.ns, &["network", "rm", &net]).ok();

    // A network that is not there, or another container's, is refused by name before
    // anything runs (even with no RUN step at all).
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox\nENV A=1\n").unwrap();
    let missing = unique("nosuch");
    let out = build(&d, ctx.path(), &["--network", &missing]);
    assert!(
        out.err().contains(&format!("network {missing} not found")),
        "{}",
        out.stderr
    );
    let out = build(&d, ctx.path(), &["--network", "container:abc"]);
    assert!(
        out.err().contains("--network \"container:abc\""),
        "{}",
        out.stderr
    );
    assert_clean(&d);
}

#[test]
fn a_running_steps_network_is_no_orphan_and_a_crash_leaves_none_of_it() {
    let mut d = daemon("build-netcrash");
    let (mut cmd, _ctx) = build_command(
        &d,
        "FROM busybox\nRUN echo running-$((1+1)); sleep 3\n",
        &["--progress", "plain"],
    );
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let l = lines.next().expect("build output ended").unwrap();
        // (the output, not the step's label)
        if l.contains("running-2") {
            break;
        }
    }
    // The step is on the bridge: berth check counts its attachment as the build's.
    let during = network_left(&d);
    assert!(
        during.iter().any(|l| l.starts_with("attachment build-")),
        "{during:?}"
    );
    let check = d.berth(&d.ns, &["check"]);
    assert!(!check.stdout.contains("orphan"), "{}", check.stdout);
    check.ok();
    // berthd dies mid-step; its next start releases the step's network before it serves
    // requests (the first answer comes after it).
    // (The step's rootfs mount under <state>/tmpmounts is left to `berth check --repair`.)
    d.d.crash();
    let _ = child.wait();
    d.d.restart().unwrap();
    let check = d.berth(&d.ns, &["check"]);
    assert!(!check.stdout.contains("attachment"), "{}", check.stdout);
    let after = network_left(&d);
    assert!(after.is_empty(), "{after:?}");
}

/// `/berth-build` on every cgroup hierarchy that is there and empty: one no build holds.
fn empty_build_cgroup_parents() -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let p = h.path().join("berth-build");
        let Ok(rd) = std::fs::read_dir(&p) else {
            continue;
        };
        if !rd
            .flatten()
            .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        {
            v.push(p);
        }
    }
    v
}

/// Two builds whose RUNs overlap, the first ending first: the runtime removes the parent
/// cgroup `/berth-build` only when its own create made it (the first build's), which then
/// still held the second's, so it was left empty on every hierarchy. berthd removes it when
/// its last build ends. (A parent that another berthd's running build holds is not empty and
/// not looked at; an empty one left before this test is removed first.)
#[test]
fn overlapping_builds_leave_no_parent_cgroup() {
    for p in empty_build_cgroup_parents() {
        let _ = std::fs::remove_dir(p);
    }
    let d = daemon("build-cg");
    let started = |child: &mut std::process::Child, word: &str| {
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            let l = lines.next().expect("build output ended").unwrap();
            if l.contains(word) {
                break;
            }
        }
        // The rest of the output, so the build never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop))
    };
    let (mut first, _c1) = build_command(
        &d,
        "FROM busybox\nRUN echo first-running; sleep 3\n",
        &["--network", "none", "-t", "berth.test/cg1:1"],
    );
    let mut first = first.spawn().unwrap();
    let r1 = started(&mut first, "first-running");
    let (mut second, _c2) = build_command(
        &d,
        "FROM busybox\nRUN echo second-running; sleep 5\n",
        &["--network", "none", "-t", "berth.test/cg2:1"],
    );
    let mut second = second.spawn().unwrap();
    let r2 = started(&mut second, "second-running");
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first build ended before the second's RUN started: they did not overlap"
    );
    assert!(first.wait().unwrap().success());
    assert!(
        second.try_wait().unwrap().is_none(),
        "the second build ended first"
    );
    assert!(second.wait().unwrap().success());
    let _ = (r1.join(), r2.join());
    assert_eq!(
        empty_build_cgroup_parents(),
        Vec::<std::path::PathBuf>::new(),
        "empty /berth-build cgroups left"
    );
    assert_clean(&d);
}

/// An image whose /etc/resolv.conf is a symlink to a missing file (systemd's stub, say): a
/// RUN on the bridge gets its resolver file where the link leads, and the image keeps the
/// link and gains nothing of what was made for the mount.
#[test]
fn a_resolv_conf_symlinked_to_a_missing_file_works_on_the_bridge() {
    let d = daemon("build-rclink");
    let ctx = context(&[]);
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\n\
         RUN --network=none ln -sf ../run/missing/stub-resolv.conf /etc/resolv.conf\n\
         RUN grep -c nameserver /etc/resolv.conf > /seen\n",
    )
    .unwrap();
    let tag = "berth.test/net:rclink";
    build(&d, ctx.path(), &["-t", tag]).ok();
    assert_ne!(run(&d, tag, "cat /seen").trim(), "0");
    assert_eq!(
        run(&d, tag, "readlink /etc/resolv.conf"),
        "../run/missing/stub-resolv.conf\n"
    );
    let paths = layer_paths(&d, tag);
    assert!(
        !paths.iter().any(|p| p.starts_with("run/missing")),
        "{paths:?}"
    );
}

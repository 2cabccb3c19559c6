//! Networks through berthd on the real CNI plugins: containers on bridge networks reach each
//! other, published ports answer on 127.0.0.1, other networks are cut off, `--net
//! none|host|container:ID`, addresses and rules released on removal and kept across a berthd
//! crash, and bad input refused with nothing left behind.
//!
//! Every berthd here runs in a network namespace of the test's own (only loopback at first):
//! its bridges, veths and iptables rules live and die there, and no packet can leave the
//! machine. Traffic goes only to 127.0.0.1 and to containers on the test's own bridges.

use berth_integration::manager::image::{self, Entry, Image, Layer};
use berth_integration::manager::{unique, Berthd};

const IMAGE: &str = "docker.io/berth/berth-net:v1";
const PAGE: &str = "hello from the web container\n";

/// berthd for one test's namespace, cleaned up on drop.
use berth_integration::manager::tasks::NsDaemon as Daemon;

fn daemon_with(ns: &str, env: &[(&str, &str)]) -> Daemon {
    let d = Berthd::start_in_netns(env).unwrap();
    let mut entries = vec![Entry::Dir("bin", 0o755)];
    for a in [
        "bin/echo",
        "bin/sleep",
        "bin/true",
        "bin/httpd",
        "bin/nc",
        "bin/hostname",
    ] {
        entries.push(Entry::Symlink(a, "busybox"));
    }
    entries.push(Entry::Dir("www", 0o755));
    entries.push(Entry::File(
        "www/index.html",
        0o644,
        PAGE.as_bytes().to_vec(),
    ));
    let img = Image::new(
        IMAGE,
        vec![
            image::base_layer().unwrap(),
            Layer::build(&entries).unwrap(),
        ],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("i.tar");
    img.write_oci_archive(&tar).unwrap();
    d.ctr(ns, &["images", "import", tar.to_str().unwrap()]).ok();
    Daemon {
        d,
        ns: ns.to_string(),
    }
}

fn daemon(ns: &str) -> Daemon {
    daemon_with(ns, &[])
}

/// A web server container on `net`, publishing its port 80 as `publish` when given.
fn web(d: &Daemon, id: &str, net: &str, publish: Option<&str>) {
    let mut args = vec!["run", "-d", "--net", net];
    if let Some(p) = publish {
        args.extend(["-p", p]);
    }
    args.extend([IMAGE, id, "httpd", "-f", "-p", "80", "-h", "/www"]);
    d.berth(&d.ns, &args).ok();
}

fn remove(d: &Daemon, id: &str) {
    d.berth(&d.ns, &["tasks", "kill", "-s", "KILL", id]).ok();
    d.berth(&d.ns, &["tasks", "wait", id]);
    d.berth(&d.ns, &["tasks", "rm", id]).ok();
    d.berth(&d.ns, &["containers", "rm", id]).ok();
}

/// The network's `inspect` JSON.
fn inspect(d: &Daemon, net: &str) -> serde_json::Value {
    d.berth(&d.ns, &["network", "inspect", net]).json()[0].clone()
}

/// The address of container `id` on network `net`.
fn address_of(d: &Daemon, net: &str, id: &str) -> String {
    let n = inspect(d, net);
    n["Containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["Id"] == id))
        .and_then(|c| c["IPv4Address"].as_str())
        .unwrap_or_else(|| panic!("{id} is not on {net}: {n}"))
        .to_string()
}

/// An HTTP GET of `/` sent with nc (Debian's static busybox wget crashes in its resolver).
fn get(host: &str, port: u16) -> String {
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port}")
}

/// The body of a page, if `response` is a 200 carrying it.
fn page_of(response: &str) -> Option<String> {
    (response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200")).then(|| {
        response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string()
    })
}

/// GET http://host:port/ from a fresh container on `net`: the body, or None.
fn fetch_from(d: &Daemon, net: &str, host: &str, port: u16) -> Option<String> {
    let id = unique("client");
    let out = d.berth(
        &d.ns,
        &[
            "run",
            "--rm",
            "--net",
            net,
            IMAGE,
            &id,
            "sh",
            "-c",
            &get(host, port),
        ],
    );
    page_of(&out.stdout)
}

/// [`fetch_from`] retried for a few seconds: a server started with `run -d` may not listen
/// yet.
fn fetch_eventually(d: &Daemon, net: &str, host: &str, port: u16) -> Option<String> {
    for _ in 0..10 {
        if let Some(page) = fetch_from(d, net, host, port) {
            return Some(page);
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    None
}

/// GET http://127.0.0.1:port/ from berthd's network namespace (the "host").
fn fetch_on_host(d: &Daemon, port: u16) -> Option<String> {
    let cmd = get("127.0.0.1", port).replace("| nc", "| busybox nc");
    page_of(&d.in_netns(&["sh", "-c", &cmd]).stdout)
}

/// host-local's address lease files, over every network.
fn leases(d: &Daemon) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(d.root().join("networks/ipam"))
        .map(|r| {
            r.flatten()
                .flat_map(|net| {
                    std::fs::read_dir(net.path())
                        .into_iter()
                        .flatten()
                        .flatten()
                })
                .filter(|f| f.file_name().to_string_lossy().starts_with("10."))
                .map(|f| f.path())
                .collect()
        })
        .unwrap_or_default()
}

/// What a clean netns holds once every container is gone: no veth, no rule naming `ids`.
#[track_caller]
fn assert_released(d: &Daemon, ids: &[&str]) {
    d.networks_released();
    let veths = d.in_netns(&["ip", "-o", "link", "show", "type", "veth"]);
    assert_eq!(veths.ok().trim(), "", "veths left");
    for table in ["nat", "filter"] {
        let rules = d.in_netns(&["iptables-save", "-t", table]);
        for id in ids {
            assert!(
                !rules.ok().contains(id),
                "{table} rules still name {id}:\n{}",
                rules.stdout
            );
        }
    }
    let netns: Vec<_> = std::fs::read_dir(d.state().join("netns"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(netns.is_empty(), "network namespaces left: {netns:?}");
    let attachments = d.state().join("networks").join(&d.ns);
    let left: Vec<_> = std::fs::read_dir(&attachments)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "attachments left: {left:?}");
}

#[test]
fn containers_on_a_network_reach_each_other_and_published_ports_answer() {
    let ns = unique("bnet");
    let d = daemon(&ns);
    d.berth(
        &ns,
        &["network", "create", "--subnet", "10.213.10.0/24", "web"],
    )
    .ok();
    d.berth(
        &ns,
        &["network", "create", "--subnet", "10.213.11.0/24", "other"],
    )
    .ok();
    let srv = unique("srv");
    web(&d, &srv, "web", Some("127.0.0.1:8080:80"));
    let ip = address_of(&d, "web", &srv);
    assert!(ip.starts_with("10.213.10."), "{ip}");
    // From another container on the same network.
    let got = fetch_eventually(&d, "web", &ip, 80);
    assert_eq!(got.as_deref(), Some(PAGE));
    // From the host (berthd's network namespace) through the port published on 127.0.0.1.
    assert_eq!(fetch_on_host(&d, 8080).as_deref(), Some(PAGE));
    // From a container on another network: cut off.
    assert_eq!(fetch_from(&d, "other", &ip, 80), None);
    // --net container:ID shares the server's namespace: its httpd is on localhost.
    let got = fetch_from(&d, &format!("container:{srv}"), "127.0.0.1", 80);
    assert_eq!(got.as_deref(), Some(PAGE));
    // /etc/hosts names the container; /etc/hostname is its host name.
    let c = unique("named");
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "--net",
            "web",
            "--hostname",
            "db1",
            IMAGE,
            &c,
            "sh",
            "-c",
            "hostname; cat /etc/hosts; cat /etc/resolv.conf",
        ],
    );
    let out = out.ok();
    assert!(out.starts_with("db1\n"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("10.213.10.") && l.contains("db1")),
        "{out}"
    );
    assert!(
        !out.contains("nameserver 127."),
        "loopback name servers must go: {out}"
    );
    assert!(
        out.contains("nameserver 10.213.10.1\n"),
        "the network's resolver on its gateway: {out}"
    );
    // Names: the server by its id (and alias) from a client started after it, through
    // aardvark-dns on the gateway; and a container started later is found by the ones
    // already running.
    let alias_srv = unique("alias");
    d.berth(
        &ns,
        &[
            "run",
            "-d",
            "--net",
            "web",
            "--network-alias",
            "www",
            IMAGE,
            &alias_srv,
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ],
    )
    .ok();
    let alias_ip = address_of(&d, "web", &alias_srv);
    let lookup =
        |name: &str| format!("nslookup -type=a {name} | sed -n 's/^Address: //p' | head -1");
    let c = unique("byname");
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "--net",
            "web",
            IMAGE,
            &c,
            "sh",
            "-c",
            &format!("ip=$({}); {}", lookup(&srv), get("$ip", 80)),
        ],
    );
    assert_eq!(
        page_of(&out.stdout).as_deref(),
        Some(PAGE),
        "{}",
        out.stderr
    );
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "--net",
            "web",
            IMAGE,
            &c,
            "sh",
            "-c",
            &lookup("www"),
        ],
    );
    assert_eq!(out.ok().trim(), alias_ip);
    let watcher = unique("watcher");
    d.berth(
        &ns,
        &[
            "run", "-d", "--net", "web", IMAGE, &watcher, "sleep", "1000",
        ],
    )
    .ok();
    let late = unique("late");
    d.berth(
        &ns,
        &["run", "-d", "--net", "web", IMAGE, &late, "sleep", "1000"],
    )
    .ok();
    let late_ip = address_of(&d, "web", &late);
    let out = d.berth(
        &ns,
        &["tasks", "exec", &watcher, "sh", "-c", &lookup(&late)],
    );
    assert_eq!(out.ok().trim(), late_ip);
    // Not on the other network.
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "--net",
            "other",
            IMAGE,
            &c,
            "sh",
            "-c",
            &lookup(&srv),
        ],
    );
    assert_eq!(out.ok().trim(), "");
    for id in [&alias_srv, &watcher, &late] {
        remove(&d, id);
    }
    // The published port is listed, by the network and by the container.
    let n = inspect(&d, "web");
    assert_eq!(
        n["Containers"][0]["Ports"][0], "127.0.0.1:8080->80/tcp",
        "{n}"
    );
    let info = d.berth(&ns, &["containers", "info", &srv]).json();
    let settings = &info["network_settings"];
    assert_eq!(
        settings["ports"],
        serde_json::json!(["127.0.0.1:8080->80/tcp"]),
        "{info}"
    );
    assert_eq!(settings["networks"]["web"]["ip"], ip.as_str(), "{info}");
    remove(&d, &srv);
    assert_eq!(inspect(&d, "web")["Containers"], serde_json::json!([]));
    assert_released(&d, &[&srv]);
    d.berth(&ns, &["network", "rm", "web", "other"]).ok();
    let ls = d.berth(&ns, &["network", "ls"]);
    assert!(!ls.ok().contains("web"), "{}", ls.stdout);
}

#[test]
fn none_host_and_the_default_bridge() {
    let ns = unique("bmodes");
    let d = daemon(&ns);
    // none (the default): only lo.
    let c = unique("none");
    let out = d.berth(&ns, &["run", "--rm", IMAGE, &c, "cat", "/proc/net/dev"]);
    let ifaces: Vec<&str> = out
        .ok()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, vec!["lo"]);
    // bridge: berth's default network, made on first use.
    let srv = unique("srv");
    web(&d, &srv, "bridge", None);
    let ip = address_of(&d, "bridge", &srv);
    let n = inspect(&d, "bridge");
    assert_eq!(n["Bridge"], "berth0", "{n}");
    assert_eq!(
        fetch_eventually(&d, "bridge", &ip, 80).as_deref(),
        Some(PAGE)
    );
    // host: the interfaces of berthd's namespace, the bridge among them.
    let c = unique("host");
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "--net",
            "host",
            IMAGE,
            &c,
            "cat",
            "/proc/net/dev",
        ],
    );
    assert!(out.ok().contains("berth0"), "{}", out.stdout);
    remove(&d, &srv);
    assert_released(&d, &[&srv]);
}

#[test]
fn twenty_concurrent_containers_get_distinct_addresses_and_release_them() {
    let ns = unique("bmany");
    let d = daemon(&ns);
    d.berth(
        &ns,
        &["network", "create", "--subnet", "10.213.20.0/24", "many"],
    )
    .ok();
    let ids: Vec<String> = (0..20).map(|i| unique(&format!("m{i}"))).collect();
    std::thread::scope(|s| {
        for id in &ids {
            let d = &d;
            s.spawn(move || {
                d.berth(
                    &d.ns,
                    &["run", "-d", "--net", "many", IMAGE, id, "sleep", "1000"],
                )
                .ok();
            });
        }
    });
    let n = inspect(&d, "many");
    let mut ips: Vec<String> = n["Containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["IPv4Address"].as_str().unwrap().to_string())
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 20, "{n}");
    assert_eq!(leases(&d).len(), 20);
    std::thread::scope(|s| {
        for id in &ids {
            let d = &d;
            s.spawn(move || remove(d, id));
        }
    });
    d.networks_released();
    assert_eq!(
        leases(&d),
        Vec::<std::path::PathBuf>::new(),
        "addresses still leased"
    );
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_released(&d, &refs);
}

#[test]
fn published_ports_and_addresses_survive_a_berthd_crash() {
    let ns = unique("bcrash");
    let mut d = daemon(&ns);
    d.berth(
        &ns,
        &["network", "create", "--subnet", "10.213.30.0/24", "keep"],
    )
    .ok();
    let srv = unique("srv");
    web(&d, &srv, "keep", Some("127.0.0.1:8081:80"));
    let ip = address_of(&d, "keep", &srv);
    let client = unique("client");
    d.berth(
        &ns,
        &[
            "run", "-d", "--net", "keep", IMAGE, &client, "sleep", "1000",
        ],
    )
    .ok();
    d.d.crash();
    d.d.restart().unwrap();
    assert_eq!(fetch_on_host(&d, 8081).as_deref(), Some(PAGE));
    assert_eq!(address_of(&d, "keep", &srv), ip);
    // Names still resolve: the resolver outlived berthd.
    let out = d.berth(
        &ns,
        &[
            "tasks", "exec", &client, "busybox", "nslookup", "-type=a", &srv,
        ],
    );
    assert!(
        out.ok().contains(&format!("Address: {ip}")),
        "{}",
        out.stdout
    );
    remove(&d, &client);
    remove(&d, &srv);
    assert_released(&d, &[&srv, &client]);
    // The network's file went with its last container (and the resolver with its last file).
    let dns_files: Vec<_> = std::fs::read_dir(d.state().join("networks/dns"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        dns_files.iter().all(|f| f == "aardvark.pid"),
        "{dns_files:?}"
    );
    // The address is free again: a new container may take it.
    let again = unique("again");
    let out = d.berth(
        &ns,
        &[
            "run", "-d", "--net", "keep", "--ip", &ip, IMAGE, &again, "sleep", "100",
        ],
    );
    out.ok();
    remove(&d, &again);
}

#[test]
fn bad_network_input_is_refused_and_leaves_nothing() {
    let ns = unique("bbad");
    let d = daemon(&ns);
    d.berth(
        &ns,
        &["network", "create", "--subnet", "10.213.40.0/24", "a"],
    )
    .ok();
    for (args, needle) in [
        (
            vec!["network", "create", "--subnet", "10.213.40.128/25", "b"],
            "overlaps",
        ),
        (
            vec!["network", "create", "--subnet", "10.213.300.0/24", "b"],
            "10.213.300.0/24",
        ),
        (
            vec!["network", "create", "--subnet", "10.213.41.0/24", "a"],
            "already exists",
        ),
        (vec!["network", "create", "bridge"], "reserved"),
        (vec!["network", "rm", "nosuch"], "nosuch"),
        (vec!["network", "rm", "bridge"], "cannot be removed"),
    ] {
        let out = d.berth(&ns, &args);
        assert!(out.err().contains(needle), "{args:?}: {}", out.stderr);
    }
    // A container asking for a network that does not exist: nothing is created.
    let c = unique("c");
    let out = d.berth(
        &ns,
        &["run", "-d", "--net", "nosuch", IMAGE, &c, "sleep", "100"],
    );
    assert!(out.err().contains("nosuch"), "{}", out.stderr);
    // A host port already published by another container.
    let srv = unique("srv");
    web(&d, &srv, "a", Some("127.0.0.1:8082:80"));
    let c2 = unique("c2");
    let out = d.berth(
        &ns,
        &[
            "run",
            "-d",
            "--net",
            "a",
            "-p",
            "127.0.0.1:8082:80",
            IMAGE,
            &c2,
            "sleep",
            "100",
        ],
    );
    assert!(out.err().contains("8082"), "{}", out.stderr);
    // A network in use cannot be removed.
    let out = d.berth(&ns, &["network", "rm", "a"]);
    assert!(out.err().contains(&srv), "{}", out.stderr);
    remove(&d, &srv);
    for id in [&c, &c2] {
        let _ = d.berth(&ns, &["tasks", "rm", id]);
        let _ = d.berth(&ns, &["containers", "rm", id]);
    }
    assert_released(&d, &[&c, &c2, &srv]);
    d.berth(&ns, &["network", "rm", "a"]).ok();
}

#[test]
fn a_missing_cni_plugin_is_named_and_nothing_is_left() {
    let ns = unique("bplug");
    let empty = tempfile::tempdir().unwrap();
    let path = empty.path().display().to_string();
    let d = daemon_with(&ns, &[("BERTH_CNI_PATH", &path)]);
    d.berth(
        &ns,
        &["network", "create", "--subnet", "10.213.50.0/24", "n"],
    )
    .ok();
    let c = unique("c");
    let out = d.berth(&ns, &["run", "-d", "--net", "n", IMAGE, &c, "sleep", "100"]);
    let err = out.err();
    assert!(err.contains("bridge") && err.contains(&path), "{err}");
    let _ = d.berth(&ns, &["containers", "rm", &c]);
    assert_released(&d, &[&c]);
}

#[test]
fn a_missing_resolver_is_named_and_nothing_is_left() {
    let ns = unique("bdns");
    let d = daemon_with(&ns, &[("BERTH_AARDVARK_DNS", "/nonexistent/aardvark-dns")]);
    d.berth(
        &ns,
        &["network", "create", "--subnet", "10.213.51.0/24", "n"],
    )
    .ok();
    let c = unique("c");
    let out = d.berth(&ns, &["run", "-d", "--net", "n", IMAGE, &c, "sleep", "100"]);
    let err = out.err();
    assert!(
        err.contains("aardvark-dns not found") && err.contains("/nonexistent/aardvark-dns"),
        "{err}"
    );
    let _ = d.berth(&ns, &["containers", "rm", &c]);
    assert_released(&d, &[&c]);
    // The default network has no names and needs no resolver.
    let out = d.berth(&ns, &["run", "--rm", "--net", "bridge", IMAGE, &c, "true"]);
    out.ok();
}

/// iptables-restore that fails every time (the first failure is retried from a fresh save,
/// as when another program changed the tables in between): the run fails naming it and its
/// error, and nothing of the container's network is left.
#[test]
fn a_failing_iptables_restore_is_named_and_nothing_is_left() {
    let ns = unique("bipt");
    let tools = tempfile::tempdir().unwrap();
    let calls = tools.path().join("calls");
    let fake = tools.path().join("iptables-restore");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\ncat >/dev/null\necho call >> {}\n\
             echo 'iptables-restore: line 3 failed' >&2\nexit 1\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        tools.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let d = daemon_with(&ns, &[("PATH", &path)]);
    d.berth(
        &ns,
        &["network", "create", "--subnet", "10.213.52.0/24", "n"],
    )
    .ok();
    let c = unique("c");
    let out = d.berth(&ns, &["run", "-d", "--net", "n", IMAGE, &c, "sleep", "100"]);
    let err = out.err();
    assert!(
        err.contains("iptables-restore") && err.contains("line 3 failed"),
        "{err}"
    );
    let tried = std::fs::read_to_string(&calls).unwrap_or_default();
    assert_eq!(tried.lines().count(), 2, "iptables-restore runs: {tried:?}");
    let _ = d.berth(&ns, &["containers", "rm", &c]);
    assert_released(&d, &[&c]);
    // None of the network's rules went in, so its removal has none to take out.
    d.berth(&ns, &["network", "rm", "n"]).ok();
    let ls = d.berth(&ns, &["network", "ls"]);
    assert!(!ls.ok().contains("10.213.52.0/24"), "{}", ls.stdout);
    let tried = std::fs::read_to_string(&calls).unwrap_or_default();
    assert_eq!(tried.lines().count(), 2, "iptables-restore runs: {tried:?}");
}

#[test]
fn connect_and_disconnect_a_running_container() {
    let ns = unique("bconn");
    let d = daemon(&ns);
    d.berth(
        &ns,
        &["network", "create", "--subnet", "10.213.60.0/24", "front"],
    )
    .ok();
    d.berth(
        &ns,
        &["network", "create", "--subnet", "10.213.61.0/24", "back"],
    )
    .ok();
    let srv = unique("srv");
    web(&d, &srv, "back", None);
    let srv_ip = address_of(&d, "back", &srv);
    let cli = unique("cli");
    d.berth(
        &ns,
        &["run", "-d", "--net", "front", IMAGE, &cli, "sleep", "1000"],
    )
    .ok();
    let exec = |script: &str| {
        d.berth(&ns, &["tasks", "exec", &cli, "sh", "-c", script])
            .stdout
    };
    let fetch = format!("{} || true", get(&srv_ip, 80));
    assert_eq!(page_of(&exec(&fetch)), None, "not connected yet");

    d.berth(&ns, &["network", "connect", "--alias", "api", "back", &cli])
        .ok();
    let cli_ip = address_of(&d, "back", &cli);
    assert!(cli_ip.starts_with("10.213.61."), "{cli_ip}");
    let addrs = exec("ip -o -4 addr show");
    assert!(
        addrs.contains("eth0") && addrs.contains(&format!("eth1    inet {cli_ip}/24"))
            || addrs.contains(&format!("{cli_ip}/24")),
        "{addrs}"
    );
    assert_eq!(page_of(&exec(&fetch)).as_deref(), Some(PAGE));
    // Names on the new network both ways: the server by id, the client by its alias.
    let lookup =
        |name: &str| format!("nslookup -type=a {name} | sed -n 's/^Address: //p' | head -1");
    assert_eq!(exec(&lookup(&srv)).trim(), srv_ip);
    let out = d.berth(&ns, &["tasks", "exec", &srv, "sh", "-c", &lookup("api")]);
    assert_eq!(out.ok().trim(), cli_ip);
    // Recorded in the container, so its next task joins both.
    let info = d.berth(&ns, &["containers", "info", &cli]).json();
    let label = info["labels"]["berth.io/networks"].as_str().unwrap_or("");
    assert!(
        label.contains("\"front\"") && label.contains("\"back\""),
        "{info}"
    );

    // Bad input: twice, an unknown network, a container on no bridge network.
    let out = d.berth(&ns, &["network", "connect", "back", &cli]);
    let err = out.err();
    assert!(err.contains("already connected to network back"), "{err}");
    let out = d.berth(&ns, &["network", "connect", "nosuch", &cli]);
    let err = out.err();
    assert!(err.contains("nosuch"), "{err}");
    let lone = unique("lone");
    d.berth(&ns, &["run", "-d", IMAGE, &lone, "sleep", "1000"])
        .ok();
    let out = d.berth(&ns, &["network", "connect", "back", &lone]);
    let err = out.err();
    assert!(err.contains("not on a bridge network"), "{err}");
    remove(&d, &lone);

    d.berth(&ns, &["network", "disconnect", "back", &cli]).ok();
    assert_eq!(page_of(&exec(&fetch)), None, "disconnected");
    assert!(!exec("ip -o -4 addr show").contains(&cli_ip));
    let on_back: Vec<String> = inspect(&d, "back")["Containers"]
        .as_array()
        .map(|cs| cs.iter().map(|c| c["Id"].to_string()).collect())
        .unwrap_or_default();
    assert!(!on_back.iter().any(|c| c.contains(&cli)), "{on_back:?}");
    let out = d.berth(&ns, &["network", "disconnect", "back", &cli]);
    let err = out.err();
    assert!(err.contains("not connected to network back"), "{err}");
    remove(&d, &cli);
    remove(&d, &srv);
    assert_released(&d, &[&cli, &srv]);
}

/// The entries of berthd's queue of networks to release.
fn release_queue(d: &Daemon) -> Vec<String> {
    std::fs::read_dir(d.state().join("networks-releasing"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A CNI plugin dir with the real host-local and portmap and a `bridge` that runs shell
/// `before` and then the real one.
fn plugins_with_bridge(before: &str) -> tempfile::TempDir {
    plugins_with_bridge_in(tempfile::tempdir().unwrap(), before)
}

fn plugins_with_bridge_in(dir: tempfile::TempDir, before: &str) -> tempfile::TempDir {
    for p in ["host-local", "portmap"] {
        std::os::unix::fs::symlink(format!("/usr/lib/cni/{p}"), dir.path().join(p)).unwrap();
    }
    let bridge = dir.path().join("bridge");
    std::fs::write(
        &bridge,
        format!("#!/bin/sh\n{before}\nexec /usr/lib/cni/bridge\n"),
    )
    .unwrap();
    std::fs::set_permissions(&bridge, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    dir
}

/// A deleted task's networks are released behind the delete (its CNI DELs do not hold it
/// up); what is still queued goes first when the same container starts again, when another
/// container publishes ports, and at berthd's next start after a crash.
#[test]
fn deleted_tasks_networks_are_released_behind_the_delete_and_after_a_crash() {
    let ns = unique("brel");
    // The real plugins, but the bridge plugin's DEL takes 3 s.
    let plugins = plugins_with_bridge("[ \"$CNI_COMMAND\" = DEL ] && sleep 3");
    let path = plugins.path().display().to_string();
    let mut d = daemon_with(&ns, &[("BERTH_CNI_PATH", &path)]);
    d.berth(
        &ns,
        &["network", "create", "--subnet", "10.213.52.0/24", "n"],
    )
    .ok();

    // The delete returns while the DEL still sleeps: the attachment waits in the queue.
    let c = unique("c");
    d.berth(
        &ns,
        &["run", "-d", "--net", "n", IMAGE, &c, "sleep", "1000"],
    )
    .ok();
    d.berth(&ns, &["tasks", "kill", "-s", "KILL", &c]).ok();
    d.berth(&ns, &["tasks", "wait", &c]);
    d.berth(&ns, &["tasks", "rm", &c]).ok();
    assert_eq!(release_queue(&d), vec![format!("{ns}--{c}")]);
    // The same container's next task: its queued release goes first, and it gets a
    // namespace and an address again.
    d.ctr(&ns, &["tasks", "start", "-d", &c]).ok();
    assert!(release_queue(&d).is_empty(), "{:?}", release_queue(&d));
    let ip = address_of(&d, "n", &c);
    assert!(ip.starts_with("10.213.52."), "{ip}");
    remove(&d, &c);

    // A published port held by a queued release is free for the next container at once.
    let (w1, w2) = (unique("w1"), unique("w2"));
    web(&d, &w1, "n", Some("127.0.0.1:8652:80"));
    assert_eq!(fetch_on_host(&d, 8652).as_deref(), Some(PAGE));
    // Published by berth's own nat rules, not the portmap plugin's chains.
    let nat = d.in_netns(&["iptables-save", "-t", "nat"]).ok().to_string();
    assert!(
        nat.contains(&format!("berth ports {w1}")) && !nat.contains("CNI-"),
        "{nat}"
    );
    remove(&d, &w1);
    web(&d, &w2, "n", Some("127.0.0.1:8652:80"));
    assert_eq!(fetch_on_host(&d, 8652).as_deref(), Some(PAGE));
    remove(&d, &w2);

    // berthd killed with releases queued: its next start finishes them before it answers.
    assert!(!release_queue(&d).is_empty(), "nothing queued to crash on");
    d.d.crash();
    d.d.restart().unwrap();
    d.berth(&ns, &["version"]).ok();
    assert!(release_queue(&d).is_empty(), "{:?}", release_queue(&d));
    assert_released(&d, &[&c, &w1, &w2]);
    let check = d.berth(&ns, &["check"]);
    assert_eq!(check.code, 0, "{check:?}");

    // A port rule no container holds is an orphan to berth check, and --repair removes it.
    let ghost = [
        "iptables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "10.213.52.99/32",
        "-m",
        "comment",
        "--comment",
        "berth ports ghost",
        "-j",
        "MASQUERADE",
    ];
    d.in_netns(&ghost).ok();
    let check = d.berth(&ns, &["check"]);
    assert_eq!(check.code, 1, "{check:?}");
    assert!(
        check.stdout.contains("orphan-port-rule ghost:"),
        "{}",
        check.stdout
    );
    d.berth(&ns, &["check", "--repair"]);
    let nat = d.in_netns(&["iptables-save", "-t", "nat"]).ok().to_string();
    assert!(!nat.contains("berth ports ghost"), "{nat}");
    assert_eq!(d.berth(&ns, &["check"]).code, 0);
}

/// A CNI DEL that fails behind a task delete is tried again: once it passes the release
/// completes; one that keeps failing is given up after three tries, and what it left (the
/// address lease) is what `berth check` reports and `--repair` removes.
#[test]
fn a_failing_release_is_retried_and_then_left_to_berth_check() {
    let ns = unique("bdel");
    // The real plugins, but the bridge plugin's DEL fails while a `fail` file exists (and
    // removes it when it says `once`).
    let plugins = tempfile::tempdir().unwrap();
    let (fail, calls) = (plugins.path().join("fail"), plugins.path().join("calls"));
    let plugins = plugins_with_bridge_in(
        plugins,
        &format!(
            "if [ \"$CNI_COMMAND\" = DEL ]; then\n\
               echo del >> {calls}\n\
               if [ -e {fail} ]; then\n\
                 grep -q once {fail} && rm -f {fail}\n\
                 echo '{{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"injected DEL failure\"}}'\n\
                 exit 1\n\
               fi\n\
             fi",
            calls = calls.display(),
            fail = fail.display()
        ),
    );
    let path = plugins.path().display().to_string();
    let d = daemon_with(&ns, &[("BERTH_CNI_PATH", &path)]);
    d.berth(
        &ns,
        &["network", "create", "--subnet", "10.213.53.0/24", "n"],
    )
    .ok();
    let dels = || {
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .count()
    };

    // The first DEL fails, the retry a second later passes: nothing is left.
    std::fs::write(&fail, "once").unwrap();
    let c = unique("c");
    d.berth(
        &ns,
        &["run", "-d", "--net", "n", IMAGE, &c, "sleep", "1000"],
    )
    .ok();
    assert_eq!(leases(&d).len(), 1);
    remove(&d, &c);
    d.networks_released();
    assert_eq!(dels(), 2, "DEL runs");
    assert_eq!(leases(&d), Vec::<std::path::PathBuf>::new());
    assert_released(&d, &[&c]);
    assert_eq!(d.berth(&ns, &["check"]).code, 0);

    // Every DEL fails: three tries (about 5 s), then the queue lets go of it. The namespace
    // and its veth went with the first try; the lease host-local keeps is left.
    std::fs::write(&fail, "always").unwrap();
    let c2 = unique("c2");
    d.berth(
        &ns,
        &["run", "-d", "--net", "n", IMAGE, &c2, "sleep", "1000"],
    )
    .ok();
    remove(&d, &c2);
    d.networks_released();
    assert_eq!(dels(), 2 + 3, "DEL runs");
    assert_released(&d, &[&c2]);
    let left = leases(&d);
    assert_eq!(left.len(), 1, "{left:?}");
    // berth check leaves files younger than a minute alone (an attach may be writing them):
    // age the lease as if that minute had passed.
    let old = std::fs::File::options().write(true).open(&left[0]).unwrap();
    old.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(120))
        .unwrap();
    let check = d.berth(&ns, &["check"]);
    assert_eq!(check.code, 1, "{check:?}");
    let ip = left[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        check.stdout.contains("orphan-address-lease") && check.stdout.contains(&ip),
        "{}",
        check.stdout
    );
    d.berth(&ns, &["check", "--repair"]);
    assert_eq!(leases(&d), Vec::<std::path::PathBuf>::new());
    assert_eq!(d.berth(&ns, &["check"]).code, 0);
    // The address is free again: a new container gets one.
    std::fs::remove_file(&fail).unwrap();
    let c3 = unique("c3");
    d.berth(
        &ns,
        &["run", "-d", "--net", "n", IMAGE, &c3, "sleep", "1000"],
    )
    .ok();
    assert!(address_of(&d, "n", &c3).starts_with("10.213.53."));
    remove(&d, &c3);
    assert_released(&d, &[&c3]);
}

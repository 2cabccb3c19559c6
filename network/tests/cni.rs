//! The real CNI plugins (Debian's containernetworking-plugins) driven through berth-network,
//! as root. Traffic goes only to 127.0.0.1 and to containers on bridges these tests make.
//!
//! Every test owns unique names (bridge `bt-<pid>-<n>`, network `bt-<pid>-<n>`, container ids)
//! and a /24 of 10.213.0.0/16 that no host route covers, so tests can run in parallel. A
//! guard DELs, removes isolation rules, deletes the bridge and the netns even on failure.
//!
//! Each test runs in a network namespace of its own ([`in_own_netns`]), so what the plugins
//! leave by design (portmap's CNI-HOSTPORT-* chains, ip_forward) goes with it. Within a test, the checks are that no
//! iptables line mentions anything of its own (container ids, addresses, bridge) after DEL.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use berth_network::cni::{Cni, NetworkConfigList, RuntimeConf};
use berth_network::config::Network;
use berth_network::firewall;
use berth_network::netns::{self, Netns};
use berth_network::ports::{self, PortMapping, Protocol};
use berth_network::subnet::{self, InUse, Subnet};

/// Runs `body` on a thread in a network namespace of its own (only `lo`, up): the bridges,
/// veths, iptables chains and sysctls the plugins make there (portmap's chains persist after
/// DEL by design, and the bridge plugin turns on ip_forward)
/// go with the namespace when the test ends, pass or fail; the host is never touched.
/// Processes the body starts (the plugins, iptables) inherit the thread's namespace.
fn in_own_netns(body: fn()) {
    let outcome = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unsharing a network namespace for the test");
        let (ok, out) = sh("ip", &["link", "set", "lo", "up"]);
        assert!(ok, "ip link set lo up: {out}");
        body();
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);
static TAKEN: Mutex<Vec<u8>> = Mutex::new(Vec::new());

fn unique() -> String {
    format!(
        "bt-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A /24 of 10.213.0.0/16 no host route and no other test of this process uses.
fn test_subnet() -> Subnet {
    let mut taken = TAKEN.lock().unwrap();
    let routes = InUse::from_routes(&subnet::host_routes().unwrap());
    let start = (std::process::id() % 64) as u8 * 4;
    for i in 0..=255u8 {
        let x = start.wrapping_add(i);
        let s: Subnet = format!("10.213.{x}.0/24").parse().unwrap();
        if !taken.contains(&x) && subnet::check_free(s, &routes).is_ok() {
            taken.push(x);
            return s;
        }
    }
    panic!("no free /24 in 10.213.0.0/16");
}

fn sh(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn iptables_lines() -> Vec<String> {
    let (_, out) = sh("iptables-save", &[]);
    out.lines()
        .filter(|l| l.starts_with("-A"))
        .map(str::to_string)
        .collect()
}

/// One network with its state dir; removes everything on drop.
struct TestNet {
    dir: tempfile::TempDir,
    net: Network,
    /// The chain for containers without published ports, and with them.
    list: NetworkConfigList,
    list_ports: NetworkConfigList,
    cni: Cni,
    attached: Mutex<Vec<(RuntimeConf, Netns)>>,
}

impl TestNet {
    fn new(internal: bool) -> TestNet {
        let name = unique();
        let dir = tempfile::tempdir().unwrap();
        let id = format!(
            "{:064x}",
            u64::from(std::process::id()) << 16 | u64::from(COUNTER.load(Ordering::SeqCst))
        );
        let mut net = Network::new(&name, &id, test_subnet()).unwrap();
        net.bridge = name.clone();
        net.internal = internal;
        let list = net.conflist(&dir.path().join("ipam"), false).unwrap();
        let list_ports = net.conflist(&dir.path().join("ipam"), true).unwrap();
        let cni = Cni::new(dir.path().join("results"));
        firewall::install(&net).unwrap();
        TestNet {
            dir,
            net,
            list,
            list_ports,
            cni,
            attached: Mutex::new(Vec::new()),
        }
    }

    fn netns_dir(&self) -> PathBuf {
        self.dir.path().join("netns")
    }

    /// A fake container: a netns attached to the network. Returns its address.
    fn attach(&self, id: &str, ports: &[PortMapping]) -> (Netns, Ipv4Addr) {
        let ns = Netns::create(&self.netns_dir(), id).unwrap();
        let rt = RuntimeConf::new(id, ns.path(), "eth0").with_port_mappings(ports);
        self.attached.lock().unwrap().push((rt.clone(), ns.clone()));
        let res = self.cni.add(self.list_for(&rt), &rt).unwrap();
        let ips = res.container_ips("eth0");
        assert_eq!(ips.len(), 1, "one address on eth0: {res:?}");
        let IpAddr::V4(ip) = ips[0] else {
            panic!("not IPv4: {ips:?}")
        };
        assert!(self.net.subnet.contains(ip), "{ip} in {}", self.net.subnet);
        (ns, ip)
    }

    /// The list a container was (or is to be) added with: DEL must use the same.
    fn list_for(&self, rt: &RuntimeConf) -> &NetworkConfigList {
        if rt.capability_args.contains_key("portMappings") {
            &self.list_ports
        } else {
            &self.list
        }
    }

    fn detach(&self, id: &str) {
        let mut att = self.attached.lock().unwrap();
        if let Some(i) = att.iter().position(|(rt, _)| rt.container_id == id) {
            let (rt, ns) = att.remove(i);
            self.cni.del(self.list_for(&rt), &rt).unwrap();
            ns.remove().unwrap();
        }
    }

    fn lease_files(&self) -> Vec<String> {
        let dir = self.dir.path().join("ipam").join(&self.net.name);
        match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<IpAddr>().is_ok())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for (rt, ns) in self.attached.lock().unwrap().drain(..) {
            let _ = self.cni.del(self.list_for(&rt), &rt);
            let _ = ns.remove();
        }
        let _ = firewall::remove(&self.net);
        let _ = sh("ip", &["link", "del", &self.net.bridge]);
        let _ = netns::release_dir(&self.netns_dir());
    }
}

/// Serves "hello" on 0.0.0.0:port inside `ns` until stopped.
struct Server {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    fn start(ns: &Netns, port: u16) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let ns = ns.clone();
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            ns.run(|| {
                let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
                l.set_nonblocking(true).unwrap();
                tx.send(()).unwrap();
                while !flag.load(Ordering::SeqCst) {
                    match l.accept() {
                        Ok((mut s, _)) => {
                            let _ = s.set_nonblocking(false);
                            let _ = s.write_all(b"hello");
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
            .unwrap();
        });
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Server {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn hello(addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf)
}

fn default_route_in(ns: &Netns) -> bool {
    ns.run(|| {
        std::fs::read_to_string("/proc/thread-self/net/route")
            .unwrap()
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some("00000000"))
    })
    .unwrap()
}

fn eth0_addr(ns: &Path) -> String {
    let (ok, out) = sh(
        "nsenter",
        &[
            &format!("--net={}", ns.display()),
            "ip",
            "-o",
            "-4",
            "addr",
            "show",
            "dev",
            "eth0",
        ],
    );
    assert!(ok, "{out}");
    out
}

#[test]
fn routed_network_add_connect_publish_check_del() {
    in_own_netns(routed_network_add_connect_publish_check_del_here);
}

fn routed_network_add_connect_publish_check_del_here() {
    let t = TestNet::new(false);
    let cid = format!("{}-c1", t.net.name);
    let lo = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let host_port = ports::pick_free(lo, Protocol::Tcp, &[]).unwrap();
    let mapping = PortMapping {
        host_port,
        container_port: 8080,
        protocol: Protocol::Tcp,
        host_ip: lo,
    };
    let (ns, ip) = t.attach(&cid, &[mapping]);

    // Outbound masquerade and forward accepts are the network's, checked by their rules.
    let lines = iptables_lines();
    let comment = format!("-m comment --comment \"berth network {}\"", t.net.name);
    let br = &t.net.bridge;
    for rule in [
        format!("-A POSTROUTING -s {} ! -o {br} {comment} -j MASQUERADE", t.net.subnet),
        format!("-A BERTH-FORWARD -i {br} {comment} -j ACCEPT"),
        format!("-A BERTH-FORWARD -o {br} -m conntrack --ctstate RELATED,ESTABLISHED {comment} -j ACCEPT"),
        format!("-A BERTH-FORWARD -o {br} -m conntrack --ctstate DNAT {comment} -j ACCEPT"),
        "-A FORWARD -j BERTH-FORWARD".to_string(),
        "-A BERTH-FORWARD -j BERTH-ISOLATION-1".to_string(),
    ] {
        assert!(lines.contains(&rule), "missing {rule:?} in {lines:#?}");
    }

    assert!(eth0_addr(ns.path()).contains(&format!("{ip}/24")));
    assert!(
        default_route_in(&ns),
        "a routed network gives a default route"
    );

    let server = Server::start(&ns, 8080);
    let direct = hello(SocketAddr::new(ip.into(), 8080), Duration::from_secs(5)).unwrap();
    assert_eq!(direct, "hello", "host to the container's address");
    let published = hello(
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), host_port),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(published, "hello", "through 127.0.0.1:{host_port}");
    drop(server);

    t.cni
        .check(&t.list, &RuntimeConf::new(&cid, ns.path(), "eth0"))
        .unwrap();
    assert_eq!(t.lease_files(), vec![ip.to_string()]);
    let mine = |l: &String| l.contains(&cid) || l.contains(&format!("{ip}/32"));
    assert!(iptables_lines().iter().any(mine), "ADD made rules");

    t.detach(&cid);
    assert!(t.lease_files().is_empty(), "lease released");
    let (_, veths) = sh("ip", &["-o", "link", "show", "master", &t.net.bridge]);
    assert!(veths.trim().is_empty(), "no veth left: {veths}");
    let left: Vec<_> = iptables_lines().into_iter().filter(mine).collect();
    assert!(left.is_empty(), "rules left: {left:?}");
    assert!(!ns.path().exists());
    // DEL again is fine.
    t.cni
        .del(&t.list, &RuntimeConf::new(&cid, ns.path(), "eth0"))
        .unwrap();

    let bridge = t.net.bridge.clone();
    drop(t);
    let left: Vec<_> = iptables_lines()
        .into_iter()
        .filter(|l| l.contains(&bridge))
        .collect();
    assert!(left.is_empty(), "isolation rules left: {left:?}");
    assert!(!sh("ip", &["link", "show", &bridge]).0, "bridge removed");
}

#[test]
fn networks_are_isolated_and_internal_has_no_way_out() {
    in_own_netns(networks_are_isolated_and_internal_has_no_way_out_here);
}

fn networks_are_isolated_and_internal_has_no_way_out_here() {
    let a = TestNet::new(false);
    let c = TestNet::new(false);
    let internal = TestNet::new(true);
    let (ns_a, _ip_a) = a.attach(&format!("{}-a", a.net.name), &[]);
    let (ns_c, ip_c) = c.attach(&format!("{}-c", c.net.name), &[]);
    let (ns_i, ip_i) = internal.attach(&format!("{}-i", internal.net.name), &[]);

    assert!(
        !default_route_in(&ns_i),
        "no default route on an internal network"
    );
    assert!(default_route_in(&ns_a));

    let _srv_c = Server::start(&ns_c, 8080);
    let _srv_i = Server::start(&ns_i, 8080);
    // The host reaches both (not forwarded traffic).
    assert_eq!(
        hello(SocketAddr::new(ip_c.into(), 8080), Duration::from_secs(5)).unwrap(),
        "hello"
    );
    assert_eq!(
        hello(SocketAddr::new(ip_i.into(), 8080), Duration::from_secs(5)).unwrap(),
        "hello"
    );

    let from_a = |ip: Ipv4Addr| {
        ns_a.run(|| hello(SocketAddr::new(ip.into(), 8080), Duration::from_millis(700)))
            .unwrap()
    };
    assert!(
        from_a(ip_c).is_err(),
        "a container on another berth bridge is unreachable"
    );
    assert!(
        from_a(ip_i).is_err(),
        "an internal network is unreachable from outside"
    );
    let out = ns_i
        .run(|| {
            hello(
                SocketAddr::new(_ip_a.into(), 8080),
                Duration::from_millis(700),
            )
        })
        .unwrap();
    assert!(out.is_err(), "nothing leaves an internal network");

    // Control: without c's rules (a's alone send nothing to stage 2 for c), a reaches c, so
    // the failure above was the isolation rules and not a broken setup.
    firewall::remove(&c.net).unwrap();
    assert_eq!(from_a(ip_c).unwrap(), "hello");
    firewall::install(&c.net).unwrap();
    assert!(from_a(ip_c).is_err());

    let names: HashSet<String> = [&a, &c, &internal]
        .iter()
        .map(|t| t.net.bridge.clone())
        .collect();
    drop((a, c, internal));
    let left: Vec<_> = iptables_lines()
        .into_iter()
        .filter(|l| names.iter().any(|n| l.contains(n.as_str())))
        .collect();
    assert!(left.is_empty(), "rules left: {left:?}");
}

#[test]
fn check_and_missing_plugins_name_the_plugin() {
    in_own_netns(check_and_missing_plugins_name_the_plugin_here);
}

fn check_and_missing_plugins_name_the_plugin_here() {
    let t = TestNet::new(false);
    // Installing is idempotent: a second install adds nothing.
    firewall::install(&t.net).unwrap();
    let count = || {
        iptables_lines()
            .iter()
            .filter(|l| l.contains(&format!("berth network {}", t.net.name)))
            .count()
    };
    assert_eq!(count(), 6);

    // A plugin path without portmap: ADD fails before touching anything.
    let cid = format!("{}-m", t.net.name);
    let ns = Netns::create(&t.netns_dir(), &cid).unwrap();
    let partial = tempfile::tempdir().unwrap();
    for p in ["bridge", "host-local"] {
        std::os::unix::fs::symlink(Path::new("/usr/lib/cni").join(p), partial.path().join(p))
            .unwrap();
    }
    let cni = Cni::new(t.dir.path().join("results")).with_plugin_path(vec![partial.path().into()]);
    let rt = RuntimeConf::new(&cid, ns.path(), "eth0");
    let e = cni.add(&t.list_ports, &rt).unwrap_err().to_string();
    assert!(
        e.contains("\"portmap\"") && e.contains(&partial.path().display().to_string()),
        "{e}"
    );
    assert!(
        !sh("ip", &["link", "show", &t.net.bridge]).0,
        "nothing was made"
    );
    ns.remove().unwrap();

    // CHECK after the container's veth vanished: the bridge plugin says so, by name.
    let cid = format!("{}-k", t.net.name);
    let (ns, _ip) = t.attach(&cid, &[]);
    let rt = RuntimeConf::new(&cid, ns.path(), "eth0");
    t.cni.check(&t.list, &rt).unwrap();
    let (ok, out) = sh(
        "nsenter",
        &[
            &format!("--net={}", ns.path().display()),
            "ip",
            "link",
            "del",
            "eth0",
        ],
    );
    assert!(ok, "{out}");
    let e = t.cni.check(&t.list, &rt).unwrap_err().to_string();
    assert!(e.contains("CNI plugin \"bridge\" CHECK failed"), "{e}");
    // DEL of a container whose interface is gone still succeeds, and (masquerade being per
    // network) leaves no rule of the container's behind.
    t.cni.del(&t.list, &rt).unwrap();
    t.detach(&cid);
    assert!(t.lease_files().is_empty());
    assert!(iptables_lines().iter().all(|l| !l.contains(&cid)));
}

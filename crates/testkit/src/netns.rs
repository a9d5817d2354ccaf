//! Network namespaces for a topology whose processes talk over real
//! interfaces (issue 16, docs/scale-out.md): a bridge of the test's own on
//! a private /24 no route of the machine covers (`10.77.<n>.0/24`, the
//! host's side `10.77.<n>.1`), and a namespace per process joined to it by
//! a veth pair (`eth0`, `10.77.<n>.<10 + k>`). A process in a namespace
//! reaches the host only through the bridge; the machine's PostgreSQL,
//! Redis and NATS listen on 127.0.0.1, so [`Network::reach`] relays a
//! loopback URL's port from the bridge's address (a TCP relay in the test
//! process: the engines see a loopback client, as their configuration
//! expects).
//!
//! It takes root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and `ip`; where either
//! is missing, [`Network::create`] or [`Network::namespace`] says why and
//! the caller runs on loopback instead. The bridge's name reserves its
//! subnet (`ip link add` fails when another run holds it); namespaces are
//! named after the subnet and the test process (`echo77-<n>-<pid>-<name>`).
//! All of it is removed when the [`Network`] is dropped, a failed test
//! too; the namespaces of a test process that was killed are removed by
//! the next [`Network::create`].

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

/// What every bridge and namespace of ours is named after.
const PREFIX: &str = "echo77-";

/// A bridge on `10.77.<subnet>.0/24`, the namespaces on it, and the relays
/// from it to the host's loopback. Removed when dropped; drop the
/// processes in its namespaces first.
#[derive(Debug)]
pub struct Network {
    subnet: u8,
    bridge: String,
    /// The host's ends of the veth pairs, each deleted with its pair.
    veths: Vec<String>,
    namespaces: Vec<String>,
    /// By the loopback address relayed to.
    relays: HashMap<SocketAddr, Relay>,
}

/// A network namespace on a [`Network`]'s bridge.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// Its name (`ip netns list`).
    pub name: String,
    /// Its address on the bridge.
    pub address: Ipv4Addr,
}

impl Namespace {
    /// `cmd` run in this namespace (`ip netns exec`, which execs the
    /// program: the child's process id is the program's). Its arguments,
    /// environment and directory are kept.
    pub fn command(&self, cmd: &Command) -> Command {
        let mut inside = Command::new("ip");
        inside
            .args(["netns", "exec", &self.name])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (name, value) in cmd.get_envs() {
            match value {
                Some(value) => inside.env(name, value),
                None => inside.env_remove(name),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            inside.current_dir(dir);
        }
        inside
    }
}

impl Network {
    /// A bridge on the first free `10.77.<n>.0/24`, up, with the host's
    /// address on it; or why not (the machine refuses, `ip` is missing, no
    /// subnet is free).
    pub fn create() -> Result<Self, String> {
        remove_left_behind();
        let routed = routed_prefixes()?;
        // Start where this process's id points, so that parallel runs
        // rarely try the same subnets.
        let first = std::process::id() % 254;
        for offset in 0..254 {
            let subnet = u8::try_from((first + offset) % 254 + 1).expect("1..=254");
            let ours = (u32::from(Ipv4Addr::new(10, 77, subnet, 0)), 24);
            if routed.iter().any(|prefix| overlap(*prefix, ours)) {
                continue;
            }
            let bridge = format!("{PREFIX}{subnet}");
            match ip(&["link", "add", &bridge, "type", "bridge"]) {
                Ok(()) => {}
                // Another run's.
                Err(e) if e.contains("File exists") => continue,
                Err(e) => return Err(e),
            }
            let network = Self {
                subnet,
                bridge,
                veths: Vec::new(),
                namespaces: Vec::new(),
                relays: HashMap::new(),
            };
            let host = format!("{}/24", network.host());
            ip(&["addr", "add", &host, "dev", &network.bridge])?;
            ip(&["link", "set", &network.bridge, "up"])?;
            return Ok(network);
        }
        Err("every 10.77.<n>.0/24 is routed or taken".to_owned())
    }

    /// The host's address on the bridge: where processes in the
    /// namespaces reach what runs on the host (and should listen there).
    pub fn host(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 1)
    }

    /// A new namespace `echo77-<n>-<pid>-<name>` on the bridge, its
    /// loopback and `eth0` up; or why not.
    pub fn namespace(&mut self, name: &str) -> Result<Namespace, String> {
        let k = self.namespaces.len() + 1;
        let address = u8::try_from(10 + k)
            .ok()
            .filter(|a| *a < 255)
            .ok_or_else(|| format!("more than 244 namespaces on {}", self.bridge))?;
        let address = Ipv4Addr::new(10, 77, self.subnet, address);
        let namespace = format!("{PREFIX}{}-{}-{name}", self.subnet, std::process::id());
        ip(&["netns", "add", &namespace])?;
        self.namespaces.push(namespace.clone());
        // At most 15 bytes: `e77-254-244`.
        let veth = format!("e77-{}-{k}", self.subnet);
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &namespace,
        ])?;
        self.veths.push(veth.clone());
        ip(&["link", "set", &veth, "master", &self.bridge, "up"])?;
        let cidr = format!("{address}/24");
        ip(&["-n", &namespace, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
        ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        Ok(Namespace {
            name: namespace,
            address,
        })
    }

    /// `url` as the namespaces reach it: a host on the machine's loopback
    /// (`127.0.0.1:<port>` or `localhost:<port>`) becomes a relay's on the
    /// bridge (`10.77.<n>.1:<port>`), one relay per loopback port; any other
    /// URL is returned as it is.
    ///
    /// # Panics
    /// When the relay cannot listen on the bridge's address.
    pub fn reach(&mut self, url: &str) -> String {
        for loopback in ["127.0.0.1:", "localhost:"] {
            let Some(at) = url.find(loopback) else {
                continue;
            };
            let digits = &url[at + loopback.len()..];
            let digits = &digits[..digits
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(digits.len())];
            let Ok(port) = digits.parse::<u16>() else {
                continue;
            };
            let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let host = self.host();
            let relay = self
                .relays
                .entry(to)
                .or_insert_with(|| Relay::start(host, to));
            let authority = &url[at..at + loopback.len() + digits.len()];
            return url.replacen(authority, &relay.address.to_string(), 1);
        }
        url.to_owned()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.relays.clear();
        // Deleting a veth's end deletes the pair at once (a namespace's
        // devices go away later, in the background).
        for veth in &self.veths {
            let _ = ip(&["link", "del", veth]);
        }
        for namespace in &self.namespaces {
            let _ = ip(&["netns", "del", namespace]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// A TCP relay from `address` (on the bridge) to a loopback address: each
/// connection accepted is joined to a new one to the target, or closed when
/// the target does not answer (as a refused connection would be). Its own
/// thread and runtime, so it runs whatever the test's runtime does; stopped
/// with its connections when dropped.
#[derive(Debug)]
struct Relay {
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(host: Ipv4Addr, to: SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind((host, 0))
            .unwrap_or_else(|e| panic!("a relay cannot listen on {host}: {e}"));
        listener.set_nonblocking(true).expect("non-blocking");
        let address = listener.local_addr().expect("the relay's address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("relay {address} → {to}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the relay's runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("the relay's listener");
                    let relay = async {
                        loop {
                            let Ok((mut inbound, _)) = listener.accept().await else {
                                // Out of descriptors, say: a moment for some to close.
                                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                                continue;
                            };
                            tokio::spawn(async move {
                                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                                    let _ = inbound.set_nodelay(true);
                                    let _ = outbound.set_nodelay(true);
                                    let _ =
                                        tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                                            .await;
                                }
                            });
                        }
                    };
                    tokio::select! {
                        _ = relay => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime drops every connection's task.
            })
            .expect("the relay's thread");
        Self {
            address,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `ip <args>`, or its error (the command and what it printed).
fn ip(args: &[&str]) -> Result<(), String> {
    ip_output(args).map(drop)
}

fn ip_output(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Every IPv4 prefix the machine routes (`ip -4 route`), as (address,
/// length): the subnets a bridge of ours must not overlap.
fn routed_prefixes() -> Result<Vec<(u32, u32)>, String> {
    let routes = ip_output(&["-4", "route", "show", "table", "all"])?;
    Ok(routes
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            // `10.0.0.0/24 dev …`, or `local 10.0.0.1 dev …` (a type first).
            let prefix = match words.first()? {
                &("local" | "broadcast" | "unicast" | "multicast") => words.get(1)?,
                prefix => prefix,
            };
            let (address, length) = prefix.split_once('/').unwrap_or((prefix, "32"));
            Some((
                u32::from(address.parse::<Ipv4Addr>().ok()?),
                length.parse().ok()?,
            ))
        })
        .collect())
}

/// Whether two prefixes share an address.
fn overlap((a, a_len): (u32, u32), (b, b_len): (u32, u32)) -> bool {
    let len = a_len.min(b_len).min(32);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    a & mask == b & mask
}

/// Removes the namespaces (and their bridges) of test processes that are
/// gone: a test killed before its [`Network`] was dropped.
fn remove_left_behind() {
    let Ok(list) = ip_output(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let mut parts = rest.splitn(3, '-');
        let (Some(subnet), Some(pid)) = (parts.next(), parts.next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
            let _ = ip(&["link", "del", &format!("{PREFIX}{subnet}")]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// `bash -c script` in `namespace`: what it printed, or its error.
    fn run_in(namespace: &Namespace, script: &str) -> Result<String, String> {
        let mut bash = Command::new("bash");
        bash.args(["-c", script]);
        let out = namespace
            .command(&bash)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    #[test]
    fn a_namespace_reaches_the_hosts_loopback_only_through_a_relay_and_nothing_is_left() {
        let mut network = match Network::create() {
            Ok(network) => network,
            // CI runs as root on a machine that allows namespaces: there,
            // a refusal is a failure, never a pass.
            Err(reason) if std::env::var_os("CI").is_none() => {
                println!("not run: the machine refuses network namespaces ({reason})");
                return;
            }
            Err(reason) => panic!("network namespaces refused under CI: {reason}"),
        };
        let bridge = network.bridge.clone();
        let namespace = network.namespace("probe").expect("a namespace");
        assert_eq!(
            network
                .namespace("other")
                .expect("a second")
                .address
                .octets()[3],
            12
        );

        // A server on the host's loopback, answering each connection once.
        let server = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = server.local_addr().expect("address").port();
        std::thread::spawn(move || {
            for mut stream in server.incoming().flatten() {
                let mut asked = [0u8; 4];
                if stream.read_exact(&mut asked).is_ok() && &asked == b"ping" {
                    let _ = stream.write_all(b"pong");
                }
            }
        });

        let url = network.reach(&format!("postgres://u@127.0.0.1:{port}/db?x=1"));
        let relayed = url
            .strip_prefix(&format!("postgres://u@{}:", network.host()))
            .and_then(|rest| rest.strip_suffix("/db?x=1"))
            .unwrap_or_else(|| panic!("{url} is not on the bridge"));
        assert_eq!(
            network.reach(&format!("http://localhost:{port}/")),
            format!("http://{}:{relayed}/", network.host()),
            "one relay per port"
        );
        assert_eq!(
            network.reach("redis://10.1.2.3:6379"),
            "redis://10.1.2.3:6379"
        );

        let ask = |host: String| {
            run_in(
                &namespace,
                &format!("exec 3<>/dev/tcp/{host}; printf ping >&3; head -c 4 <&3"),
            )
        };
        assert_eq!(
            ask(format!("{}/{relayed}", network.host())).as_deref(),
            Ok("pong")
        );
        // The namespace's loopback is its own: the host's port is not there.
        assert!(
            ask(format!("127.0.0.1/{port}")).is_err(),
            "the host's loopback leaked in"
        );

        let name = namespace.name.clone();
        drop(network);
        let namespaces = ip_output(&["netns", "list"]).expect("ip netns list");
        assert!(
            !namespaces.contains(&name),
            "{name} left behind: {namespaces}"
        );
        assert!(
            ip(&["link", "show", &bridge]).is_err(),
            "{bridge} left behind"
        );
    }

    #[test]
    fn prefixes_overlap_when_the_shorter_covers_the_other() {
        let net = |a: [u8; 4], len| (u32::from(Ipv4Addr::from(a)), len);
        assert!(overlap(net([10, 0, 0, 0], 8), net([10, 77, 3, 0], 24)));
        assert!(overlap(net([10, 77, 3, 7], 32), net([10, 77, 3, 0], 24)));
        assert!(!overlap(net([10, 77, 4, 0], 24), net([10, 77, 3, 0], 24)));
        assert!(!overlap(net([192, 168, 0, 0], 16), net([10, 77, 3, 0], 24)));
        assert!(overlap(net([0, 0, 0, 0], 0), net([10, 77, 3, 0], 24)));
    }
}

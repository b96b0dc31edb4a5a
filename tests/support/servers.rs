//! Real servers for the tests: redis-server (standalone, password, TLS, Sentinel, Cluster) and
//! memcached, each on free loopback ports, each stopped (by PID) when its handle is dropped.
//!
//! A missing server binary fails the test with instructions; it never skips.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn require(binary: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(binary))
            .find(|path| path.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{binary} not found on PATH. These tests talk to a real {binary}: run ./scripts/test.sh, \
             which installs redis-server and memcached from Debian's packages, or install them yourself."
        )
    })
}

pub fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server process, killed when dropped.
pub struct Process {
    child: Option<Child>,
    pub name: String,
}

impl Process {
    fn spawn(name: &str, command: &mut Command) -> Process {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process {
            child: Some(child),
            name: name.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// Whether the process has ended (a server that could not listen exits at once).
    fn has_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|child| child.try_wait().ok().flatten().is_some())
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A scratch directory removed when dropped.
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    pub fn new() -> Scratch {
        Scratch(tempfile::tempdir().unwrap())
    }
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// One redis-server.
pub struct Redis {
    pub process: Process,
    pub port: u16,
    cli_args: Vec<String>,
    _dir: Scratch,
}

impl Redis {
    /// A plain server on a free port.
    pub fn start() -> Redis {
        Self::start_on_a_free_port(free_port, &[])
    }

    /// A server on a port from `port` with extra arguments, on another port if one it was given
    /// was taken before the server could listen (another test's server can take a port between
    /// the moment it was found free and the moment this one binds it).
    fn start_on_a_free_port(port: fn() -> u16, extra: &[&str]) -> Redis {
        for _ in 0..5 {
            if let Some(redis) = Self::try_start_with(port(), extra) {
                return redis;
            }
        }
        panic!("redis-server could not listen on any of 5 free ports");
    }

    /// A server on `port` with extra arguments (e.g. `--requirepass`).
    pub fn start_with(port: u16, extra: &[&str]) -> Redis {
        Self::try_start_with(port, extra)
            .unwrap_or_else(|| panic!("redis-server could not listen on port {port}: taken?"))
    }

    /// A server on `port`, or `None` if it could not listen there.
    fn try_start_with(port: u16, extra: &[&str]) -> Option<Redis> {
        let dir = Scratch::new();
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.path().display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cli_args = vec!["-p".to_owned(), port.to_string()];
        if let Some(at) = extra.iter().position(|a| *a == "--requirepass") {
            cli_args.extend([
                "-a".to_owned(),
                extra[at + 1].to_owned(),
                "--no-auth-warning".to_owned(),
            ]);
        }
        let process = Process::spawn(
            "redis-server",
            Command::new(require("redis-server")).args(&args),
        );
        let mut redis = Redis {
            process,
            port,
            cli_args,
            _dir: dir,
        };
        redis.wait_ready().then_some(redis)
    }

    /// A TLS-only server with a CA and certificate made for this test.
    pub fn start_tls() -> (Redis, TlsFiles) {
        let tls = TlsFiles::generate();
        for _ in 0..5 {
            let port = free_port();
            let started = Self::try_start_with(
                free_port(),
                &[
                    "--tls-port",
                    &port.to_string(),
                    "--tls-cert-file",
                    tls.cert.to_str().unwrap(),
                    "--tls-key-file",
                    tls.key.to_str().unwrap(),
                    "--tls-ca-cert-file",
                    tls.ca.to_str().unwrap(),
                    "--tls-auth-clients",
                    "no",
                ],
            );
            let Some(mut redis) = started else { continue };
            redis.port = port;
            redis.cli_args = vec![
                "-p".into(),
                port.to_string(),
                "--tls".into(),
                "--cacert".into(),
                tls.ca.display().to_string(),
            ];
            if redis.wait_ready() {
                return (redis, tls);
            }
        }
        panic!("redis-server could not listen with TLS on any of 5 free ports");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs redis-cli against this server; returns its trimmed output.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new(require("redis-cli"))
            .args(&self.cli_args)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Waits until this server answers on its port; false if it ended first. The answer must
    /// name this server's process: another server on the port would answer too.
    fn wait_ready(&mut self) -> bool {
        let ours = format!("process_id:{}", self.process.pid());
        let mut ended = false;
        wait_until(
            "redis-server to answer on its port",
            Duration::from_secs(20),
            || {
                ended = self.process.has_exited();
                ended || self.cli(&["INFO", "server"]).contains(&ours)
            },
        );
        !ended
    }
}

/// A CA, and a server certificate it signed for `localhost` and 127.0.0.1.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    _dir: Scratch,
}

impl TlsFiles {
    pub fn generate() -> TlsFiles {
        let dir = Scratch::new();
        let at = |name: &str| dir.path().join(name);
        let openssl = require("openssl");
        let run = |args: &[&str]| {
            let output = Command::new(&openssl)
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=cache-middleware test CA",
            ],
        ]
        .concat());
        run(&[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat());
        std::fs::write(at("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        TlsFiles {
            ca: at("ca.crt"),
            cert: at("server.crt"),
            key: at("server.key"),
            _dir: dir,
        }
    }
}

/// A master, one replica and one sentinel watching them as `mymaster`.
pub struct SentinelSetup {
    pub master: Redis,
    pub replica: Redis,
    pub sentinel: Process,
    pub sentinel_port: u16,
    _dir: Scratch,
}

impl SentinelSetup {
    pub const MASTER_NAME: &'static str = "mymaster";

    pub fn start() -> SentinelSetup {
        let master = Redis::start();
        let master_port = master.port.to_string();
        let replica = Redis::start_with(free_port(), &["--replicaof", "127.0.0.1", &master_port]);
        wait_until("the replica to sync", Duration::from_secs(20), || {
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        let dir = Scratch::new();
        let sentinel_port = free_port();
        let config = dir.path().join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {name} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 5000\n",
                dir.path().display(),
                name = Self::MASTER_NAME
            ),
        )
        .unwrap();
        let sentinel = Process::spawn(
            "redis-sentinel",
            Command::new(require("redis-server"))
                .arg(&config)
                .arg("--sentinel"),
        );
        let setup = SentinelSetup {
            master,
            replica,
            sentinel,
            sentinel_port,
            _dir: dir,
        };
        wait_until(
            "the sentinel to see the replica",
            Duration::from_secs(30),
            || {
                setup
                    .sentinel_cli(&["SENTINEL", "REPLICAS", Self::MASTER_NAME])
                    .contains(&setup.replica.port.to_string())
            },
        );
        setup
    }

    pub fn sentinel_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel_port)
    }

    /// Asks the sentinel for a failover, again until it accepts (it refuses while it does not
    /// yet know the replica well enough: `NOGOODSLAVE`).
    pub fn fail_over(&self) {
        wait_until(
            "the sentinel to start a failover",
            Duration::from_secs(30),
            || self.sentinel_cli(&["SENTINEL", "FAILOVER", Self::MASTER_NAME]) == "OK",
        );
    }

    /// Whether the sentinel names the server on `port` as the master.
    pub fn names_master(&self, port: u16) -> bool {
        self.sentinel_cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self::MASTER_NAME])
            .contains(&port.to_string())
    }

    pub fn sentinel_cli(&self, args: &[&str]) -> String {
        let output = Command::new(require("redis-cli"))
            .args(["-p", &self.sentinel_port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

/// Three masters sharing the 16384 slots.
pub struct Cluster {
    pub nodes: Vec<Redis>,
}

impl Cluster {
    pub fn start() -> Cluster {
        let nodes: Vec<Redis> = (0..3)
            .map(|_| {
                // The configuration file lives in the server's own scratch directory.
                let cluster = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ];
                Redis::start_on_a_free_port(free_cluster_port, &cluster)
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let output = Command::new(require("redis-cli"))
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        for node in &nodes {
            wait_until("the cluster to be ok", Duration::from_secs(30), || {
                node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
        }
        Cluster { nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::url).collect()
    }
}

/// One memcached.
pub struct Memcached {
    pub process: Process,
    pub port: u16,
}

impl Memcached {
    pub fn start() -> Memcached {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Memcached {
        let mut command = Command::new(require("memcached"));
        command.args([
            "-l",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "0",
            "-m",
            "64",
        ]);
        // memcached refuses to run as root without being told which user to be.
        if std::env::var("USER").as_deref() == Ok("root") || is_root() {
            command.args(["-u", "root"]);
        }
        let process = Process::spawn("memcached", &mut command);
        wait_until("memcached to listen", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Memcached { process, port }
    }

    pub fn url(&self) -> String {
        format!("memcached://127.0.0.1:{}", self.port)
    }

    /// One command over the text protocol, and the reply up to its last line (`END`, `DELETED`,
    /// `NOT_FOUND`, ...), lines joined by `\n`.
    pub fn command(&self, command: &str) -> String {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.write_all(command.as_bytes()).unwrap();
        let mut reply = Vec::new();
        for line in BufReader::new(stream).split(b'\n') {
            // Values may be binary: shown lossily.
            let line = String::from_utf8_lossy(&line.unwrap())
                .trim_end()
                .to_owned();
            let last = !line.starts_with("VALUE")
                && (line.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
            reply.push(line);
            if last {
                break;
            }
        }
        reply.join("\n")
    }

    /// `stats` as seen over the text protocol: the value of one statistic.
    pub fn stat(&self, name: &str) -> Option<u64> {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.write_all(b"stats\r\n").ok()?;
        let prefix = format!("STAT {name} ");
        for line in BufReader::new(stream).lines() {
            let line = line.ok()?;
            if line == "END" {
                return None;
            }
            if let Some(value) = line.strip_prefix(&prefix) {
                return value.trim().parse().ok();
            }
        }
        None
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

//! Private servers that speak only TLS, for tests/tls.rs: a CA and a server
//! certificate made with `openssl`, and PostgreSQL, MariaDB and Redis
//! started on free loopback ports with them. Each server is stopped when
//! its value is dropped. The shared servers are never touched.
//!
//! A missing program (`openssl`, `initdb`, `mariadbd`, `redis-server`)
//! fails the test: `scripts/services` installs them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a private server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// True when the tests run as root: the database servers then run as
/// their own OS users (`postgres`, `mysql`), since they refuse root.
fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("`id` runs");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// `program` run as `user` when the tests run as root, else as ourselves.
fn command_as(user: &str, program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", user, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Runs `cmd`, failing the test with its output when it fails.
fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{what}: cannot run {cmd:?}: {e} (scripts/services installs it)")
    });
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A temporary directory the server users can enter.
fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    set_mode(dir.path(), 0o755);
    dir
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(user: &str, path: &Path) {
    if is_root() {
        run(Command::new("chown").arg("-R").arg(user).arg(path), "chown");
    }
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool, log: &Path) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < START_TIMEOUT,
            "{what} did not start within {START_TIMEOUT:?}; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server process, killed (and reaped) when dropped. Declared before the
/// temporary directory it uses, so it dies before the directory is removed.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A test CA, a server certificate it signed for `IP:127.0.0.1` and
/// `DNS:localhost`, and a second CA that signed nothing of ours (the
/// "wrong CA").
pub struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    pub fn generate() -> Certs {
        let dir = shared_tempdir();
        let d = dir.path();
        let openssl = |args: &[&str], what: &str| {
            run(Command::new("openssl").args(args).current_dir(d), what);
        };
        for ca in ["ca", "wrong-ca"] {
            openssl(
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                    "-subj",
                    &format!("/CN=safesync test {ca}"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
                "openssl: make a CA",
            );
        }
        openssl(
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
            "openssl: make the server's key",
        );
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
            "openssl: sign the server's certificate",
        );
        for f in ["ca.pem", "wrong-ca.pem", "server.pem", "server.key"] {
            set_mode(&d.join(f), 0o644);
        }
        Certs { dir }
    }

    /// The CA that signed the servers' certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA that did not sign it.
    pub fn wrong_ca(&self) -> PathBuf {
        self.dir.path().join("wrong-ca.pem")
    }

    fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin`.
fn pg_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed in /usr/lib/postgresql (scripts/services installs it)")
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("initdb in /usr/lib/postgresql/*/bin (scripts/services installs PostgreSQL)")
        .1
}

/// A private PostgreSQL that accepts only TLS connections (`hostssl`),
/// user `postgres` with no password.
pub struct TlsPostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl TlsPostgres {
    pub fn start(certs: &Certs) -> TlsPostgres {
        let bin = pg_bin();
        let dir = shared_tempdir();
        let d = dir.path();
        // The key must belong to the server's user and be private to it.
        std::fs::copy(certs.server_cert(), d.join("server.pem")).unwrap();
        std::fs::copy(certs.server_key(), d.join("server.key")).unwrap();
        set_mode(&d.join("server.key"), 0o600);
        std::fs::create_dir(d.join("data")).unwrap();
        chown("postgres", d);
        run(
            command_as("postgres", &bin.join("initdb"))
                .arg("-D")
                .arg(d.join("data"))
                .args(["-A", "trust", "-U", "postgres", "--no-sync"]),
            "initdb",
        );
        std::fs::write(
            d.join("data/pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        let port = free_port();
        let options = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={dir} \
             -c ssl=on -c ssl_cert_file={dir}/server.pem -c ssl_key_file={dir}/server.key \
             -c fsync=off",
            dir = d.display()
        );
        let pg = TlsPostgres { port, dir, bin };
        run(
            command_as("postgres", &pg.bin.join("pg_ctl"))
                .arg("-D")
                .arg(pg.dir.path().join("data"))
                .arg("-l")
                .arg(pg.dir.path().join("log"))
                .args(["-w", "-t", "60", "-o", &options, "start"]),
            "pg_ctl start",
        );
        pg
    }

    /// `sslmode=verify-full` with `ca` as the root certificate.
    pub fn url(&self, ca: &Path) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
            self.port,
            ca.display()
        )
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = command_as("postgres", &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A private MariaDB with `require_secure_transport`: user `tls`, password
/// `tls-secret`, database `test`.
pub struct TlsMariaDb {
    pub port: u16,
    _process: KillOnDrop,
    _dir: tempfile::TempDir,
}

impl TlsMariaDb {
    pub fn start(certs: &Certs) -> TlsMariaDb {
        let dir = shared_tempdir();
        let d = dir.path();
        let data = d.join("data");
        let socket = d.join("mariadb.sock");
        let log = d.join("error.log");
        std::fs::create_dir(&data).unwrap();
        chown("mysql", d);
        let user: &[&str] = if is_root() { &["--user=mysql"] } else { &[] };
        run(
            Command::new("mariadb-install-db")
                .args(["--no-defaults", "--auth-root-authentication-method=normal"])
                .args(["--skip-test-db"])
                .args(user)
                .arg(format!("--datadir={}", data.display())),
            "mariadb-install-db",
        );
        let port = free_port();
        let process = Command::new("mariadbd")
            .arg("--no-defaults")
            .args(user)
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", d.join("mariadb.pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--port={port}"))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
            .arg(format!("--ssl-cert={}", certs.server_cert().display()))
            .arg(format!("--ssl-key={}", certs.server_key().display()))
            .arg(format!("--ssl-ca={}", certs.ca().display()))
            .arg("--require-secure-transport=ON")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd is installed (scripts/services installs it)");
        let server = TlsMariaDb {
            port,
            _process: KillOnDrop(process),
            _dir: dir,
        };
        let admin = |sql: &str| {
            Command::new("mariadb")
                .arg(format!("--socket={}", socket.display()))
                .args(["-u", "root", "-e", sql])
                .output()
                .expect("the mariadb client is installed (scripts/services installs it)")
        };
        wait_until(
            "private mariadbd",
            || admin("SELECT 1").status.success(),
            &log,
        );
        let out = admin(
            "CREATE USER 'tls'@'%' IDENTIFIED BY 'tls-secret'; \
             GRANT ALL PRIVILEGES ON *.* TO 'tls'@'%'; CREATE DATABASE test;",
        );
        assert!(
            out.status.success(),
            "creating the MariaDB user: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server
    }

    /// `ssl-mode=VERIFY_IDENTITY` with `ca` as the CA.
    pub fn url(&self, ca: &Path) -> String {
        format!(
            "mysql://tls:tls-secret@127.0.0.1:{}/test?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
            self.port,
            ca.display()
        )
    }
}

/// A private `redis-server` listening only for TLS (`--port 0`).
pub struct TlsRedis {
    pub port: u16,
    _process: KillOnDrop,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    pub fn start(certs: &Certs) -> TlsRedis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("redis.log");
        let process = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(certs.server_cert())
            .arg("--tls-key-file")
            .arg(certs.server_key())
            .arg("--tls-ca-cert-file")
            .arg(certs.ca())
            .args(["--tls-auth-clients", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/services installs it)");
        let server = TlsRedis {
            port,
            _process: KillOnDrop(process),
            _dir: dir,
        };
        wait_until(
            "private TLS redis-server",
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            &log,
        );
        server
    }

    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

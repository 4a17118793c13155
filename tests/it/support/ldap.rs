//! A real OpenLDAP server (Debian's `slapd`) of the test's own: cn=config built with `slapadd`
//! from the shipped `config/ldap/gatehouse.ldif`, throw-away data in a temp dir, loopback port,
//! optional TLS (StartTLS and ldaps) with a CA of its own. Stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{free_port, wait_for_port, ALICE_PASSWORD, ALICE_PHONE, BOB_MOBILE};

pub const BASE_DN: &str = "dc=example,dc=org";
pub const PEOPLE_DN: &str = "ou=people,dc=example,dc=org";
pub const SERVICE_DN: &str = "cn=gatehouse,ou=services,dc=example,dc=org";
pub const SERVICE_PASSWORD: &str = "service-secret-7d1e";

pub struct LdapServer {
    child: Option<Child>,
    pub port: u16,
    /// ldaps:// port, when started with TLS.
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| {
        panic!(
            "{command:?}: {e} (Debian packages slapd, ldap-utils, openssl; .ci/run installs them)"
        )
    });
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// slapd's tools live in /usr/sbin, which a user's PATH may lack.
pub fn sbin(tool: &str) -> PathBuf {
    let path = Path::new("/usr/sbin").join(tool);
    if path.exists() {
        path
    } else {
        PathBuf::from(tool)
    }
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// alice (number in phoneNumberVerified, Gatehouse's class), bob (number in the standard
/// `mobile`, a plain inetOrgPerson), carol (no number); all with the test password.
fn people() -> String {
    format!(
        "dn: uid=alice,{PEOPLE_DN}\nobjectClass: inetOrgPerson\nobjectClass: gatehouseUser\nuid: alice\ncn: Alice\nsn: Liddell\nmail: alice@example.org\nmail: a.liddell@example.org\nuserPassword: {ALICE_PASSWORD}\nphoneNumberVerified: {ALICE_PHONE}\n\n\
         dn: uid=bob,{PEOPLE_DN}\nobjectClass: inetOrgPerson\nuid: bob\ncn: Bob\nsn: Builder\nuserPassword: {ALICE_PASSWORD}\nmobile: {BOB_MOBILE}\n\n\
         dn: uid=carol,{PEOPLE_DN}\nobjectClass: inetOrgPerson\nuid: carol\ncn: Carol\nsn: Singer\nuserPassword: {ALICE_PASSWORD}\n\n"
    )
}

impl LdapServer {
    pub fn start() -> LdapServer {
        LdapServer::build(false)
    }

    /// Also serves TLS: StartTLS on the plain port and ldaps on `tls_port`, with a certificate
    /// for 127.0.0.1 signed by [`LdapServer::ca_file`].
    pub fn start_with_tls() -> LdapServer {
        LdapServer::build(true)
    }

    fn build(tls: bool) -> LdapServer {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("conf")).unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        let mut tls_lines = String::new();
        if tls {
            make_certificates(root);
            tls_lines = format!(
                "olcTLSCACertificateFile: {}\nolcTLSCertificateFile: {}\nolcTLSCertificateKeyFile: {}\n",
                root.join("ca.pem").display(),
                root.join("server.pem").display(),
                root.join("server.key").display()
            );
        }
        let config = format!(
            "dn: cn=config\nobjectClass: olcGlobal\ncn: config\nolcPidFile: {pid}\n{tls_lines}\n\
             dn: cn=module{{0}},cn=config\nobjectClass: olcModuleList\ncn: module{{0}}\nolcModulePath: /usr/lib/ldap\nolcModuleLoad: back_mdb\n\n\
             dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n\n\
             include: file:///etc/ldap/schema/core.ldif\n\n\
             include: file:///etc/ldap/schema/cosine.ldif\n\n\
             include: file:///etc/ldap/schema/inetorgperson.ldif\n\n\
             include: file://{schema}\n\n\
             dn: olcDatabase={{1}}mdb,cn=config\nobjectClass: olcDatabaseConfig\nobjectClass: olcMdbConfig\nolcDatabase: {{1}}mdb\nolcSuffix: {BASE_DN}\nolcRootDN: cn=admin,{BASE_DN}\nolcRootPW: admin-secret\nolcDbDirectory: {data}\nolcDbMaxSize: 67108864\n\
             olcAccess: {{0}}to attrs=userPassword by anonymous auth by * none\n\
             olcAccess: {{1}}to * by dn.exact=\"{SERVICE_DN}\" write by * none\n",
            pid = root.join("slapd.pid").display(),
            schema = repo_file("config/ldap/gatehouse.ldif").display(),
            data = root.join("data").display(),
        );
        std::fs::write(root.join("config.ldif"), config).unwrap();
        let data = format!(
            "dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
             dn: {PEOPLE_DN}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: ou=services,{BASE_DN}\nobjectClass: organizationalUnit\nou: services\n\n\
             dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: gatehouse\nuserPassword: {SERVICE_PASSWORD}\n\n{}",
            people()
        );
        std::fs::write(root.join("data.ldif"), data).unwrap();
        let conf = root.join("conf");
        run(Command::new(sbin("slapadd"))
            .args(["-n0", "-F"])
            .arg(&conf)
            .arg("-l")
            .arg(root.join("config.ldif")));
        run(Command::new(sbin("slapadd"))
            .args(["-n1", "-F"])
            .arg(&conf)
            .arg("-l")
            .arg(root.join("data.ldif")));
        let mut server = LdapServer {
            child: None,
            port: free_port(),
            tls_port: tls.then(free_port),
            dir,
        };
        server.run();
        server
    }

    /// Starts slapd (again, on the same ports and data).
    pub fn run(&mut self) {
        let mut urls = format!("ldap://127.0.0.1:{}/", self.port);
        if let Some(tls_port) = self.tls_port {
            urls.push_str(&format!(" ldaps://127.0.0.1:{tls_port}/"));
        }
        let child = Command::new(sbin("slapd"))
            .arg("-F")
            .arg(self.dir.path().join("conf"))
            .args(["-h", &urls, "-d", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("slapd (Debian package slapd; .ci/run installs it)");
        self.child = Some(child);
        wait_for_port(self.port, "slapd");
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The `[directory]` section for this server (plain ldap://).
    pub fn directory_config(&self) -> String {
        self.directory_config_with(&self.url(), "")
    }

    pub fn directory_config_with(&self, url: &str, more: &str) -> String {
        format!(
            "[directory]\nbackend = \"ldap\"\nurl = {url:?}\nbind_dn = {SERVICE_DN:?}\nbind_password = {SERVICE_PASSWORD:?}\nbase_dn = {PEOPLE_DN:?}\nuser_filter = \"(&(objectClass=inetOrgPerson)(uid={{username}}))\"\ntimeout_ms = 1000\n{more}\n"
        )
    }

    /// An attribute of an entry as `ldapsearch` (ldap-utils), bound as the service account,
    /// reads it: what another LDAP client sees of Gatehouse's writes.
    pub fn values(&self, uid: &str, attribute: &str) -> Vec<String> {
        let output = Command::new("ldapsearch")
            .args(["-x", "-LLL", "-o", "ldif-wrap=no", "-H", &self.url()])
            .args(["-D", SERVICE_DN, "-w", SERVICE_PASSWORD, "-b", PEOPLE_DN])
            .arg(format!("(uid={uid})"))
            .arg(attribute)
            .output()
            .expect("ldapsearch (Debian package ldap-utils)");
        assert!(output.status.success(), "{output:?}");
        let prefix = format!("{attribute}: ");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }
}

/// A CA and a server certificate for 127.0.0.1, made with the openssl command.
fn make_certificates(root: &Path) {
    let path = |name: &str| root.join(name);
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=Gatehouse test CA", "-keyout"])
        .arg(path("ca.key"))
        .arg("-out")
        .arg(path("ca.pem")));
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ])
        .arg(path("server.key"))
        .arg("-out")
        .arg(path("server.csr")));
    std::fs::write(path("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(path("server.csr"))
        .arg("-CA")
        .arg(path("ca.pem"))
        .arg("-CAkey")
        .arg(path("ca.key"))
        .arg("-CAcreateserial")
        .arg("-extfile")
        .arg(path("san.ext"))
        .arg("-out")
        .arg(path("server.pem")));
}

impl Drop for LdapServer {
    fn drop(&mut self) {
        self.stop();
    }
}

//! Certificates made on the spot for the TLS tests: a CA, a server
//! certificate for `localhost` and `127.0.0.1` signed by it, a client
//! certificate signed by it, an expired server certificate, and a second
//! CA with a server certificate of its own.

use std::path::{Path, PathBuf};

pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA no certificate here chains to but these two.
    pub other_ca: PathBuf,
    /// A server certificate for the same names, signed by `other_ca` (a
    /// rotation to another CA).
    pub other_server_cert: PathBuf,
    pub other_server_key: PathBuf,
    /// A server certificate from `ca` for the same names that expired in
    /// 2021.
    pub expired_server_cert: PathBuf,
    pub expired_server_key: PathBuf,
}

impl Pki {
    /// Writes every file into `dir`.
    pub fn new(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ch-ingest test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
        let expired_key = KeyPair::generate().unwrap();
        let mut expired =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        expired.not_before = rcgen::date_time_ymd(2020, 1, 1);
        expired.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let expired_cert = expired.signed_by(&expired_key, &issuer).unwrap().pem();
        let (client_cert, client_key) = leaf(vec!["client.ch-ingest.test".into()]);
        let other_key = KeyPair::generate().unwrap();
        let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
        other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A subject of its own: a leaf with the default subject would
        // otherwise name itself as its issuer (OpenSSL: "self-signed").
        other
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ch-ingest other CA");
        let other_ca = other.self_signed(&other_key).unwrap().pem();
        let other_issuer = Issuer::new(other, other_key);
        let other_server_key = KeyPair::generate().unwrap();
        let other_server_cert =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
                .unwrap()
                .signed_by(&other_server_key, &other_issuer)
                .unwrap()
                .pem();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", &ca_cert.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            other_ca: write("other-ca.pem", &other_ca),
            other_server_cert: write("other-server.pem", &other_server_cert),
            other_server_key: write("other-server.key", &other_server_key.serialize_pem()),
            expired_server_cert: write("expired-server.pem", &expired_cert),
            expired_server_key: write("expired-server.key", &expired_key.serialize_pem()),
        }
    }

    /// A private server serving HTTPS with this PKI's certificate (with
    /// `mutual`, requiring a client certificate signed by `ca`), and its
    /// HTTPS URL (`https://localhost:PORT`).
    pub fn start_server(&self, mutual: bool) -> Result<(super::Server, String), String> {
        let https = super::free_port();
        let xml = if mutual {
            self.mutual_server_xml(https)
        } else {
            self.server_xml(https)
        };
        let server = super::Server::start_node(super::free_port(), super::free_port(), &xml)?;
        Ok((server, format!("https://localhost:{https}")))
    }

    /// The `<https_port>` and `<openSSL>` XML of a private server that
    /// serves HTTPS on `port` with this PKI's server certificate.
    pub fn server_xml(&self, port: u16) -> String {
        self.server_xml_with(port, "<verificationMode>none</verificationMode>".into())
    }

    /// The same, but the server requires a client certificate signed by
    /// `ca` (mutual TLS).
    pub fn mutual_server_xml(&self, port: u16) -> String {
        self.server_xml_with(
            port,
            format!(
                "<verificationMode>strict</verificationMode><caConfig>{}</caConfig>",
                self.ca.display()
            ),
        )
    }

    fn server_xml_with(&self, port: u16, verification: String) -> String {
        format!(
            "<https_port>{port}</https_port>\n<openSSL><server>\
             <certificateFile>{}</certificateFile><privateKeyFile>{}</privateKeyFile>\
             {verification}<loadDefaultCAFile>false</loadDefaultCAFile>\
             <cacheSessions>true</cacheSessions><disableProtocols>sslv2,sslv3</disableProtocols>\
             <preferServerCiphers>true</preferServerCiphers></server></openSSL>",
            self.server_cert.display(),
            self.server_key.display()
        )
    }
}

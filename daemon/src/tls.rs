//! The process's TLS crypto provider (ring, shared by SMTP and HTTP).

/// Installs it once; later calls do nothing.
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

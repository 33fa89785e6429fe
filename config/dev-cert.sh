#!/usr/bin/env bash
# config/dev-cert.sh: a development CA and a localhost server certificate for config/dev.toml.
#
#   config/dev-cert.sh            # writes .dev/tls/{ca.pem,ca-key.pem,cert.pem,key.pem}
#   GW_TLS_DIR=/some/dir config/dev-cert.sh
#
# ECDSA P-256 keys (PKCS#8 PEM), SAN DNS:localhost, IP:127.0.0.1, IP:::1, 825 days (the most
# browsers accept). Safe to rerun: existing files are kept unless they expire within 7 days or
# no longer match; the CA is kept when only the server certificate needs renewing, so a CA you
# already trust stays trusted. Never use these files outside development.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${GW_TLS_DIR:-$root/.dev/tls}"
days=825
renew_within=$((7 * 24 * 3600))

command -v openssl >/dev/null 2>&1 || {
    echo "error: openssl is needed (Debian/Ubuntu: apt-get install openssl)" >&2
    exit 1
}
mkdir -p "$dir"
chmod 700 "$dir"
cd "$dir"

# True when certificate $1 exists and stays valid for longer than the renewal window.
fresh() {
    [ -s "$1" ] && openssl x509 -in "$1" -noout -checkend "$renew_within" >/dev/null 2>&1
}

# The public key of a certificate or of a private key, for comparing them.
cert_pub() { openssl x509 -in "$1" -noout -pubkey 2>/dev/null; }
key_pub() { openssl pkey -in "$1" -pubout 2>/dev/null; }

new_key() {
    (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1")
}

ca_made=0
if fresh ca.pem && [ -s ca-key.pem ] && [ "$(cert_pub ca.pem)" = "$(key_pub ca-key.pem)" ]; then
    echo "dev CA: keeping $dir/ca.pem (valid until $(openssl x509 -in ca.pem -noout -enddate | cut -d= -f2))"
else
    echo "dev CA: creating $dir/ca.pem"
    new_key ca-key.pem
    cat >ca.cnf <<'EOF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
O = Gateway development
CN = Gateway development CA
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
    openssl req -new -x509 -key ca-key.pem -sha256 -days "$days" -config ca.cnf -out ca.pem
    rm -f ca.cnf
    ca_made=1
fi

if [ "$ca_made" = 0 ] && fresh cert.pem && [ -s key.pem ] &&
    [ "$(cert_pub cert.pem)" = "$(key_pub key.pem)" ] &&
    openssl verify -CAfile ca.pem cert.pem >/dev/null 2>&1; then
    echo "server certificate: keeping $dir/cert.pem (valid until $(openssl x509 -in cert.pem -noout -enddate | cut -d= -f2))"
else
    echo "server certificate: creating $dir/cert.pem for localhost, 127.0.0.1, ::1"
    new_key key.pem
    cat >server.cnf <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
O = Gateway development
CN = localhost
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EOF
    openssl req -new -key key.pem -config server.cnf -out server.csr
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
        -sha256 -days "$days" -extfile server.cnf -extensions v3_server -out cert.pem 2>/dev/null
    rm -f server.cnf server.csr ca.srl
    openssl verify -CAfile ca.pem cert.pem >/dev/null
fi
chmod 600 ca-key.pem key.pem
chmod 644 ca.pem cert.pem

rel="${dir#"$root"/}"
cat <<EOF
dev TLS files in $dir:
  ca.pem    the development CA (trust this one)
  cert.pem  server certificate for localhost, 127.0.0.1 and ::1 (config/dev.toml: server.tls_cert)
  key.pem   its private key, PKCS#8 (server.tls_key)
Trust the CA per command:  curl --cacert $rel/ca.pem https://localhost:8443/
or in a browser: import $rel/ca.pem as a certificate authority (Firefox: Settings > Certificates;
Chrome/Linux: chrome://certificate-manager), or accept the warning once.
EOF

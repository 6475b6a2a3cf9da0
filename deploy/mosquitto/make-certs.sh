#!/bin/sh
# Certificates for the assettwin broker: a CA, the broker's server certificate, one client certificate per
# gateway, one per cloud role, and a revocation list. For a test or a small deployment; a larger one
# issues the same certificates from its own PKI (the broker only needs the CA, and the CN rules below).
#
#   make-certs.sh [-d DIR] [-days N] ca                         # once: CA key + certificate, empty CRL
#   make-certs.sh [-d DIR] [-days N] broker HOST [HOST...]      # server cert; each HOST is a DNS name or IP (SAN)
#   make-certs.sh [-d DIR] [-days N] gateway TENANT GATEWAY     # client cert, CN "TENANT/GATEWAY"
#   make-certs.sh [-d DIR] [-days N] client NAME                # cloud role (CN "cloud") or "health"
#   make-certs.sh [-d DIR] revoke CERT.pem                      # revoke, then rewrite DIR/crl.pem
#
# DIR defaults to ./certs. What goes where:
#   DIR/broker/        ca.pem, broker.pem, broker.key, crl.pem: the broker's certs directory, all it needs
#   DIR/gateways/T/    G.pem and G.key for gateway G of tenant T, with DIR/ca.pem: copy to that gateway only
#   DIR/clients/       cloud.pem/.key (ingest workers and the API), health.pem/.key (the broker's probe)
#   DIR/ca.key, DIR/ca/  the CA's key and its database: they sign and revoke everything, so they stay on
#                      an admin machine (chmod 600), never on the broker or a gateway
#
# Identity is the certificate's CN, which Mosquitto uses as the username (use_identity_as_username):
# the ACL (deploy/mosquitto/acl) pins "TENANT/GATEWAY" to twin/v1/TENANT/GATEWAY/..., and grants the
# cloud role by the CN "cloud". Keys are EC P-256: small, and a fast handshake on a Raspberry Pi.
set -eu

dir=./certs
days=825
SAN=DNS:localhost  # read by the config's server section; set per broker certificate below
export SAN
while [ $# -gt 0 ]; do
    case "$1" in
        -d) dir=$2; shift 2 ;;
        -days) days=$2; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || { sed -n '2,21p' "$0" >&2; exit 2; }
cmd=$1; shift
[ "$cmd" != ca ] || mkdir -p "$dir"
[ -d "$dir" ] && dir=$(cd "$dir" && pwd)

die() { echo "make-certs.sh: $*" >&2; exit 1; }
need_ca() {
    [ -f "$dir/ca.key" ] || die "no CA in $dir: run 'make-certs.sh -d $dir ca' first"
    ca_conf > "$dir/ca/openssl.cnf"  # rewritten each time: the directory may have moved
}

# An id that goes into a topic level: no '/', '+', '#', no leading '$', not empty (models/topics.py).
check_id() {
    case "$2" in
        ''|*/*|*+*|*'#'*|'$'*|*' '*) die "$1 '$2' cannot be used in a topic (no / + # space, no leading \$)" ;;
    esac
}

# openssl ca needs a config: a database (index.txt, serial) so that certificates can be revoked.
ca_conf() {
    cat <<EOF
[ca]
default_ca = assettwin
[assettwin]
dir = $dir/ca
database = \$dir/index.txt
serial = \$dir/serial
crlnumber = \$dir/crlnumber
new_certs_dir = \$dir/issued
certificate = $dir/ca.pem
private_key = $dir/ca.key
default_md = sha256
default_crl_days = 3650
policy = by_cn
unique_subject = no
copy_extensions = none
[by_cn]
commonName = supplied
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = \${ENV::SAN}
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
EOF
}

gencrl() {
    openssl ca -config "$dir/ca/openssl.cnf" -gencrl -out "$dir/broker/crl.pem" 2>/dev/null
}

# issue NAME-PATH CN EXTENSION-SECTION: a key (kept if it exists: re-issuing renews the certificate) and a
# certificate signed by the CA.
issue() {
    out=$1; cn=$2; ext=$3
    mkdir -p "$(dirname "$out")"
    [ -f "$out.key" ] || (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out.key")
    # The CN may hold a '/' (TENANT/GATEWAY): escaped for -subj.
    subj=$(printf '/CN=%s' "$cn" | sed 's#\(.\)/#\1\\/#g')
    openssl req -new -key "$out.key" -subj "$subj" -out "$out.csr"
    openssl ca -batch -config "$dir/ca/openssl.cnf" -extensions "$ext" -days "$days" \
        -in "$out.csr" -out "$out.pem" -notext 2>/dev/null || die "signing $cn failed"
    rm -f "$out.csr"
    echo "$out.pem  (CN=$cn)"
}

case "$cmd" in
    ca)
        [ ! -f "$dir/ca.key" ] || die "$dir/ca.key exists; a new CA would invalidate every certificate it issued"
        mkdir -p "$dir/ca/issued" "$dir/broker"
        : > "$dir/ca/index.txt"
        echo 1000 > "$dir/ca/serial"
        echo 1000 > "$dir/ca/crlnumber"
        ca_conf > "$dir/ca/openssl.cnf"
        (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca.key")
        openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=assettwin broker CA" -days 3650 -sha256 \
            -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -out "$dir/ca.pem"
        cp "$dir/ca.pem" "$dir/broker/ca.pem"
        gencrl
        echo "$dir/ca.pem  (CA; $dir/ca.key signs: keep it off the broker)"
        ;;
    broker)
        need_ca
        [ $# -ge 1 ] || die "broker needs at least one HOST (DNS name or IP address the clients connect to)"
        san=""
        for h in "$@"; do
            case "$h" in
                *[!0-9.]*) case "$h" in *:*) entry="IP:$h" ;; *) entry="DNS:$h" ;; esac ;;
                *) entry="IP:$h" ;;
            esac
            san="${san:+$san,}$entry"
        done
        SAN=$san
        issue "$dir/broker/broker" "$1" server
        ;;
    gateway)
        need_ca
        [ $# -eq 2 ] || die "gateway needs TENANT GATEWAY"
        check_id tenant "$1"; check_id gateway "$2"
        issue "$dir/gateways/$1/$2" "$1/$2" client
        ;;
    client)
        need_ca
        [ $# -eq 1 ] || die "client needs NAME (cloud, health)"
        check_id client "$1"
        issue "$dir/clients/$1" "$1" client
        ;;
    revoke)
        need_ca
        [ $# -eq 1 ] && [ -f "$1" ] || die "revoke needs the certificate file to revoke"
        openssl ca -config "$dir/ca/openssl.cnf" -revoke "$1" 2>/dev/null || die "could not revoke $1"
        gencrl
        echo "revoked $1; copy $dir/broker/crl.pem to the broker and restart it (Mosquitto reads the CRL at start)"
        ;;
    *)
        die "unknown command '$cmd' (ca, broker, gateway, client, revoke)"
        ;;
esac

#!/bin/sh
# Makes a private CA and a serving certificate for ck8s-admission.ck8s-system.svc, for the
# self-signed overlay. Needs only openssl (1.1.1 or newer). Writes into the directory given
# as the first argument (default: this script's directory):
#   ca.crt, ca.key   the CA (keep ca.key offline; it is needed again only to re-sign)
#   tls.crt, tls.key the serving pair the webhook loads
#
#   ./gen-certs.sh                 # new CA and serving certificate
#   ./gen-certs.sh --renew         # new serving certificate from the existing CA
#                                  # (the caBundle stays the same: no change in the API server)
#
# Validity: CA 5 years, serving certificate 1 year. Re-run with --renew before it expires
# and `kubectl apply -k` again; see deploy/README.md, "Certificate rotation".
set -eu

renew=false
if [ "${1:-}" = "--renew" ]; then renew=true; shift; fi
out="${1:-$(dirname "$0")}"
service="ck8s-admission"
namespace="ck8s-system"
days_ca="${CK8S_CA_DAYS:-1825}"
days_tls="${CK8S_TLS_DAYS:-365}"

command -v openssl >/dev/null 2>&1 || { echo "error: openssl not found" >&2; echo "help: install openssl, or use overlays/cert-manager" >&2; exit 2; }
mkdir -p "$out"
cd "$out"
umask 077

if [ "$renew" = false ]; then
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout ca.key -out ca.crt -days "$days_ca" -subj "/CN=ck8s-admission-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
elif [ ! -f ca.key ] || [ ! -f ca.crt ]; then
  echo "error: --renew needs ca.crt and ca.key in $out" >&2
  exit 2
fi

ext=$(mktemp)
trap 'rm -f "$ext" tls.csr' EXIT
cat > "$ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:$service.$namespace.svc,DNS:$service.$namespace.svc.cluster.local
EXT
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
  -keyout tls.key -out tls.csr -subj "/CN=$service.$namespace.svc" 2>/dev/null
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out tls.crt \
  -days "$days_tls" -extfile "$ext" 2>/dev/null
rm -f ca.srl
chmod 600 ca.key tls.key
chmod 644 ca.crt tls.crt
echo "wrote $out/ca.crt, ca.key, tls.crt, tls.key (serving certificate for $service.$namespace.svc)"

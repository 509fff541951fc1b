# OpenLDAP's slapd from Debian's package, with its own slapd.conf and data in the services folder
# (deploy/ldap: the config template and the seed users and groups), ldap:// with StartTLS and
# ldaps://, both with a test CA made here by openssl. 127.0.0.1 only. Sourced.

SLAPD_ROOT=$SERVICES_DIR/slapd
SLAPD_CERTS=$SLAPD_ROOT/certs
SLAPD_PIDFILE=$SLAPD_ROOT/slapd.pid
SLAPD_LOG=$LOG_DIR/slapd.log
SLAPD_ADMIN_DN="cn=admin,dc=kirby,dc=test"
SLAPD_ADMIN_PASSWORD=kirby-ldap-admin

slapd_address() { echo "127.0.0.1:$LDAP_PORT"; }

slapd_install() {
  local missing=()  # only what is missing: never upgrade a package that is there
  [ -x /usr/sbin/slapd ] || missing+=(slapd)
  command -v ldapadd >/dev/null || missing+=(ldap-utils)
  command -v openssl >/dev/null || missing+=(openssl)
  [ ${#missing[@]} -eq 0 ] && return 0
  # Debian's policy-rc.d may forbid starting services (exit 101): the package's own daemon then
  # stays down, which is what we want; ours runs from the services folder on its own port.
  apt_install "${missing[@]}"
}

slapd_pid() {
  local pid
  pid=$(read_pid "$SLAPD_PIDFILE")
  pid_alive "$pid" "$SLAPD_ROOT/slapd.conf" && echo "$pid"
}

slapd_ready() {
  ldapsearch -x -LLL -H "ldap://127.0.0.1:$LDAP_PORT" -D "$SLAPD_ADMIN_DN" -w "$SLAPD_ADMIN_PASSWORD" \
    -b "" -s base "(objectClass=*)" namingContexts >/dev/null 2>&1
}

# A test CA and a server certificate for 127.0.0.1 and localhost (made once, kept with the data).
slapd_certificates() {
  [ -f "$SLAPD_CERTS/server.pem" ] && return 0
  mkdir -p "$SLAPD_CERTS"
  (
    cd "$SLAPD_CERTS"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Kirby test CA" \
      -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.pem
    chmod 600 ca.key server.key
  ) >>"$SLAPD_LOG" 2>&1 || fail_with_log slapd "$SLAPD_LOG" "making the test CA with openssl failed"
}

slapd_start() {
  require_free_port slapd KIRBY_LDAP_PORT "$LDAP_PORT"
  require_free_port slapd KIRBY_LDAPS_PORT "$LDAPS_PORT"
  mkdir -p "$SLAPD_ROOT/data"
  touch "$SLAPD_LOG"
  slapd_certificates
  sed "s|@DIR@|$SLAPD_ROOT|g" "$DEPLOY_DIR/ldap/slapd.conf.template" >"$SLAPD_ROOT/slapd.conf"
  /usr/sbin/slaptest -u -f "$SLAPD_ROOT/slapd.conf" >>"$SLAPD_LOG" 2>&1 || fail_with_log slapd "$SLAPD_LOG" "slaptest refused slapd.conf"
  # -d 0: in the foreground (spawn detaches it), so its pid is ours; errors still reach the log.
  spawn "$SLAPD_PIDFILE" "$SLAPD_LOG" /usr/sbin/slapd -d 0 -f "$SLAPD_ROOT/slapd.conf" \
    -h "ldap://127.0.0.1:$LDAP_PORT/ ldaps://127.0.0.1:$LDAPS_PORT/"
  wait_until 30 slapd "$SLAPD_LOG" slapd_ready
  slapd_seed
}

# The seed users and groups, added once (the marker is the seeded base entry itself).
slapd_seed() {
  ldapsearch -x -LLL -H "ldap://127.0.0.1:$LDAP_PORT" -D "$SLAPD_ADMIN_DN" -w "$SLAPD_ADMIN_PASSWORD" \
    -b "uid=ada,ou=people,dc=kirby,dc=test" -s base dn >/dev/null 2>&1 && return 0
  say "slapd: adding the seed users and groups (deploy/ldap/seed.ldif)"
  ldapadd -x -c -H "ldap://127.0.0.1:$LDAP_PORT" -D "$SLAPD_ADMIN_DN" -w "$SLAPD_ADMIN_PASSWORD" \
    -f "$DEPLOY_DIR/ldap/seed.ldif" >>"$SLAPD_LOG" 2>&1 || fail_with_log slapd "$SLAPD_LOG" "ldapadd of the seed failed"
}

slapd_stop() {
  local pid
  pid=$(slapd_pid) || return 0
  stop_pid slapd "$pid"
  rm -f "$SLAPD_PIDFILE"
}

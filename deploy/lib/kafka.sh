# Apache Kafka (KRaft, one node acting as broker and controller) from its jars on Maven Central.
# The jars are downloaded once into the cache; storage is formatted once per services folder. Sourced.

KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$DEPLOY_DIR/kafka/pom.xml")
KAFKA_LIBS=$CACHE_DIR/kafka-$KAFKA_VERSION/libs
KAFKA_ROOT=$SERVICES_DIR/kafka
KAFKA_CONFIG=$KAFKA_ROOT/server.properties
KAFKA_PIDFILE=$RUN_DIR/kafka.pid
KAFKA_LOG=$LOG_DIR/kafka.log
KAFKA_READY_SECONDS=${KIRBY_KAFKA_READY_SECONDS:-90}
# C1 only (TieredStopAtLevel=1) halves the start-up time on 2 cores; plenty for tests and benches.
read -r -a KAFKA_JAVA_OPTS <<<"${KIRBY_KAFKA_JAVA_OPTS:--Xms256m -Xmx1g -XX:+UseG1GC -XX:TieredStopAtLevel=1}"

kafka_address() { echo "127.0.0.1:$KAFKA_PORT"; }

kafka_install() {
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  [ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ] && return 0
  command -v mvn >/dev/null || apt_install maven
  say "kafka: downloading Kafka $KAFKA_VERSION's jars from Maven Central into $KAFKA_LIBS"
  local partial=$KAFKA_LIBS.partial.$$
  rm -rf "$partial"
  local log=$LOG_DIR/kafka-download.log
  mvn -B -Dstyle.color=never -f "$DEPLOY_DIR/kafka/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$partial" -Dmaven.repo.local="$CACHE_DIR/maven-repository" >"$log" 2>&1 \
    || fail_with_log kafka "$log" "downloading the jars with mvn failed"
  mv -T "$partial" "$KAFKA_LIBS" 2>/dev/null || rm -rf "$partial"  # another clone won the race
}

kafka_pid() {
  local pid
  pid=$(read_pid "$KAFKA_PIDFILE")
  pid_alive "$pid" "$KAFKA_CONFIG" && echo "$pid"
}

kafka_ready() { python3 "$DEPLOY_DIR/kafka/ready.py" "127.0.0.1:$KAFKA_PORT"; }

# java with Kafka's jars and our logging configuration (an array: it is also run through nohup).
KAFKA_JAVA=(java -Djava.awt.headless=true -Dlog4j2.configurationFile="$DEPLOY_DIR/kafka/log4j2.properties"
  -cp "$KAFKA_LIBS/*")

kafka_configure() {
  mkdir -p "$KAFKA_ROOT/data"
  sed -e "s|@PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
    -e "s|@LOG_DIRS@|$KAFKA_ROOT/data|g" "$DEPLOY_DIR/kafka/server.properties.template" >"$KAFKA_CONFIG"
  [ -f "$KAFKA_ROOT/data/meta.properties" ] && return 0
  local cluster_id
  cluster_id=$(python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
  say "kafka: formatting storage (cluster $cluster_id)"
  # --cluster-id=ID, not -t ID: an id may start with "-".
  "${KAFKA_JAVA[@]}" -XX:TieredStopAtLevel=1 kafka.tools.StorageTool format --cluster-id="$cluster_id" \
    --config="$KAFKA_CONFIG" >>"$KAFKA_LOG" 2>&1 \
    || fail_with_log kafka "$KAFKA_LOG" "formatting the storage failed"
}

kafka_start() {
  require_free_port kafka KIRBY_KAFKA_PORT "$KAFKA_PORT"
  require_free_port kafka KIRBY_KAFKA_CONTROLLER_PORT "$KAFKA_CONTROLLER_PORT"
  kafka_configure
  spawn "$KAFKA_PIDFILE" "$KAFKA_LOG" "${KAFKA_JAVA[@]}" "${KAFKA_JAVA_OPTS[@]}" kafka.Kafka "$KAFKA_CONFIG"
  wait_until "$KAFKA_READY_SECONDS" kafka "$KAFKA_LOG" kafka_ready
}

kafka_stop() {
  local pid
  pid=$(kafka_pid) || return 0
  stop_pid kafka "$pid"
  rm -f "$KAFKA_PIDFILE"
}

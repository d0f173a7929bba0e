# Shell helpers for the test scripts (source it from the repository's root).

# The address (host:port) that a `blast mock --listen 127.0.0.1:0` logging to $1 names in its
# first line, once it has; fails with the log after 5 s without one.
mock_addr() {
    local log="$1" addr=""
    for _ in $(seq 100); do
        addr="$(sed -n 's|.*listening on http://\([^ ]*\).*|\1|p' "$log")"
        [ -n "$addr" ] && break
        sleep 0.05
    done
    [ -n "$addr" ] || { echo "blast mock did not start:" >&2; cat "$log" >&2; return 1; }
    echo "$addr"
}

# A loopback port that was free a moment ago (for a server that cannot pick its own).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The start of an nginx.conf for a test nginx run as root in the foreground with every file
# under $1: one worker, the pid, error log and temp paths there. It ends inside `http {`.
nginx_conf_head() {
    local dir="$1"
    mkdir -p "$dir/tmp"
    cat <<CONF
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
CONF
}

# nginx's path (PATH, else Debian's /usr/sbin); exits 2 when it is not installed.
nginx_bin() {
    local nginx
    nginx="$(command -v nginx || echo /usr/sbin/nginx)"
    [ -x "$nginx" ] || { echo "nginx is not installed (apt-get install -y nginx)" >&2; exit 2; }
    echo "$nginx"
}

# For an EXIT trap: stop the processes $2... (those set) and remove the directory $1.
stop_and_remove() {
    local dir="$1" pid
    shift
    for pid in "$@"; do
        if [ -n "$pid" ]; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$dir"
}

# Start nginx ($1) on the nginx.conf in directory $2, in the background, and set nginx_pid;
# then wait (at most 5 s) until `curl -s URL` (the rest of the arguments) gets an answer.
start_nginx() {
    local nginx="$1" dir="$2"
    shift 2
    "$nginx" -c "$dir/nginx.conf" -p "$dir" &
    nginx_pid=$!
    for _ in $(seq 100); do
        curl -s -o /dev/null "$@" && return
        sleep 0.05
    done
    echo "nginx did not answer:" >&2
    cat "$dir/error.log" >&2
    return 1
}

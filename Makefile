# mod_sip: build with apxs; `make run` and `make test` work on a fresh Debian 12.
APXS      ?= $(shell command -v apxs 2>/dev/null || echo /usr/bin/apxs)
HTTPD     ?= /usr/sbin/apache2
MODDIR    ?= /usr/lib/apache2/modules
SOURCES    = mod_sip.c sip_event.c sip_transport.c sip_message.c sip_transaction.c sip_proxy.c sip_relay.c \
             sip_route.c \
             sip_location.c sip_registrar.c sip_script_store.c sip_upload.c sip_cpl.c sip_cpl_run.c \
             sip_cpl_time.c sip_cpl_mail.c \
             sip_mime.c sip_register_payload.c \
             sip_cgi.c sip_auth.c sip_nonce.c sip_request.c sip_engine.c sip_log.c sip_stats.c \
             sip_dispatch.c sip_cpl_exec.c sip_uri_list.c sip_consent.c sip_explode.c sip_explode_run.c sip_options.c \
             sip_rules.c sip_namemap.c sip_lists.c sip_forward.c \
             sip_tls.c sip_ws.c sip_ws_upgrade.c sip_fcgi.c sip_fcgi_pool.c sip_dns.c sip_stun.c sip_handover.c sip_location_dbd.c sip_replica.c sip_freelist.c
HEADERS    = $(wildcard sip_*.h)
CWARN      = -Wc,-Wall -Wc,-Wextra -Wc,-Wno-missing-field-initializers -Wc,-Wno-unused-parameter
EXTRA_CFLAGS ?=
EXTRA_LDFLAGS ?=
# libxml2: CPL schema validation at upload (sip_cpl.c, docs/cpl.md)
XML_CFLAGS = $(shell pkg-config --cflags libxml-2.0 2>/dev/null || echo -I/usr/include/libxml2)
XML_LIBS   = $(shell pkg-config --libs libxml-2.0 2>/dev/null || echo -lxml2)
# libical: recurrences of CPL time switches (sip_cpl_time.c, RFC 3880 §4.4)
ICAL_CFLAGS = $(shell pkg-config --cflags libical 2>/dev/null)
ICAL_LIBS   = $(shell pkg-config --libs libical 2>/dev/null || echo -lical)
SSL_CFLAGS = $(shell pkg-config --cflags openssl 2>/dev/null)
SSL_LIBS   = $(shell pkg-config --libs openssl 2>/dev/null || echo -lssl -lcrypto)
LIBS       = -losip2 -losipparser2 $(XML_LIBS) $(ICAL_LIBS) $(SSL_LIBS) -lcares -lresolv -lpq
# conf/cpl.xsd (RFC 3880's schema) compiled in as a string: no run-time path
GENERATED  = sip_cpl_xsd.h

# Uploaded SIP-CGI scripts (issue 12): the setuid helper that starts them as
# SipUploadUser, and where state lives.  Debian's apxs says localstatedir is
# /var/lock/apache2 (a tmpfs), so state goes to /var/lib there.
APXS_STATE     := $(shell $(APXS) -q localstatedir 2>/dev/null)
APXS_LIBEXEC   := $(shell $(APXS) -q libexecdir 2>/dev/null)
SIP_STATE_DIR  ?= $(if $(filter %/lock/apache2 %/lock,$(APXS_STATE)),/var/lib/mod_sip,$(APXS_STATE)/lib/mod_sip)
SIP_SUEXEC_PATH ?= $(patsubst %/,%,$(dir $(APXS_LIBEXEC)))/sip-suexec
HTTPD_GROUP    ?= www-data
PATH_DEFS   = -Wc,-DSIP_STATE_DIR='\"$(SIP_STATE_DIR)\"' -Wc,-DSIP_SUEXEC_PATH='\"$(SIP_SUEXEC_PATH)\"'
SUEXEC      = tools/sip-suexec
# The helper runs scripts as SIP_UPLOAD_USER only (the account make install
# creates), so httpd's group cannot use it to become anyone else (postgres,
# say).  SIP_UPLOAD_USER= (empty) builds one that takes any user of uid >= 100
# but the caller (docs/security.md); make -B tools/sip-suexec after a change.
SIP_UPLOAD_USER ?= mod-sip-upload
SUEXEC_DEFS = $(if $(SIP_UPLOAD_USER),-DSIP_SUEXEC_TARGET='"$(SIP_UPLOAD_USER)"')
# Forwarding files' |program run as their owner (sip-suexec --owner): never
# below this uid (SipForwardMinUid can only raise it), and, when
# SIP_FORWARD_FILE is set (e.g. '~/.sipforward'), only for that
# SipForwardFile template.
SIP_FORWARD_MIN_UID ?= 1000
SIP_FORWARD_FILE ?=
SUEXEC_DEFS += -DSIP_SUEXEC_OWNER_UID_MIN=$(SIP_FORWARD_MIN_UID) \
               $(if $(SIP_FORWARD_FILE),-DSIP_SUEXEC_FORWARD_FILE='"$(SIP_FORWARD_FILE)"')
# the unprivileged user the tests run uploaded scripts as (t/upload-exec.t)
TEST_UPLOAD_USER = mod-sip-upload

# bubblewrap: the sandbox uploaded scripts run in (SipUploadSandbox On)
BUILD_PKGS = apache2 apache2-dev libosip2-dev libxml2-dev libical-dev tzdata pkg-config bubblewrap libssl-dev libc-ares-dev libpq-dev
TEST_PKGS  = $(BUILD_PKGS) sip-tester libnet-sip-perl check procps baresip-core linphone-cli \
             libaprutil1-dbd-sqlite3 libaprutil1-dbd-pgsql postgresql apache2-utils sqlite3 \
             libio-socket-ssl-perl openssl socat chromium python3-dnslib
# make run: the self-signed certificate of its wss:// port
RUN_PKGS   = $(BUILD_PKGS) openssl

RUNDIR     = $(CURDIR)/run
SHELL      = /bin/bash

.PHONY: all deps test-deps install run stop test unit prove clean test-asan ci fuzz fuzz-deps \
        node-deps node-apt run-deps

all: .libs/mod_sip.so $(SUEXEC)

.libs/mod_sip.so: $(SOURCES) $(HEADERS) $(GENERATED) Makefile
	@test -x "$(APXS)" || $(MAKE) deps
	$(APXS) -c $(CWARN) $(PATH_DEFS) $(XML_CFLAGS) $(ICAL_CFLAGS) $(SSL_CFLAGS) $(EXTRA_CFLAGS) $(EXTRA_LDFLAGS) -o mod_sip.la $(SOURCES) $(LIBS)

# Small and on its own: no APR, nothing but libc.
$(SUEXEC): tools/sip-suexec.c sip_fwd_owner.h Makefile
	$(CC) -O2 -g -Wall -Wextra -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fPIE -pie \
	  $(SUEXEC_DEFS) -Wl,-z,relro,-z,now -o $@ $<

# Each line of the schema as a C string line; the schema has no backslash.
sip_cpl_xsd.h: conf/cpl.xsd Makefile
	{ echo '/* Made by the Makefile from conf/cpl.xsd (RFC 3880 Appendix C); do not edit. */'; \
	  echo 'static const char sip_cpl_xsd[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' conf/cpl.xsd; \
	  echo ';'; } > $@.tmp && mv $@.tmp $@

# Install only what is missing, so repeated runs stay quick and offline.
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

deps:
	$(call apt_install,$(BUILD_PKGS))

# Node.js and npm bring the browser phone's JsSIP (www/phone/) and the browser
# test's driver (t/browser/drive.js), pinned in package-lock.json: the
# machine's own Node.js when it has one, else Debian's.
node-deps:
	@if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory node-apt; fi

node-apt:
	$(call apt_install,nodejs npm)

JSSIP_DIST = $(CURDIR)/node_modules/jssip/dist
NODE_STAMP = node_modules/.package-lock.json
$(NODE_STAMP): package.json package-lock.json
	$(MAKE) --no-print-directory node-deps
	npm ci --no-audit --no-fund

test-deps:
	$(call apt_install,$(TEST_PKGS))
	@id -u $(TEST_UPLOAD_USER) >/dev/null 2>&1 || { \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO useradd --system --no-create-home --home-dir /nonexistent \
	    --shell /usr/sbin/nologin $(TEST_UPLOAD_USER); }

# sip-script, the users' tool for their uploaded scripts: a program for
# people, not for httpd, so it goes where local programs go.
BINDIR    ?= /usr/local/bin

# sip-suexec: setuid root, runnable only by httpd's group (as Apache's suexec)
install: all
	$(APXS) -i -n sip mod_sip.la
	$(if $(SIP_UPLOAD_USER),id -u $(SIP_UPLOAD_USER) >/dev/null 2>&1 || useradd --system \
	  --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin $(SIP_UPLOAD_USER))
	install -o root -g $(HTTPD_GROUP) -m 4750 $(SUEXEC) $(SIP_SUEXEC_PATH)
	install -D -m 755 tools/sip-script $(DESTDIR)$(BINDIR)/sip-script

$(RUNDIR)/httpd.conf: conf/run.conf.in Makefile
	mkdir -p $(RUNDIR)/logs $(RUNDIR)/run
	if [ "$$(id -u)" = 0 ]; then ug='User www-data\nGroup www-data'; chown -R www-data: $(RUNDIR)/logs; else ug=''; fi; \
	sed -e 's|@ROOT@|$(RUNDIR)|g' -e 's|@MODULE@|$(CURDIR)/.libs/mod_sip.so|g' \
	    -e 's|@SCRIPTS@|$(CURDIR)/sip-cgi-bin|g' -e 's|@MODDIR@|$(MODDIR)|g' \
	    -e 's|@WWW@|$(CURDIR)/www|g' -e 's|@JSSIP@|$(JSSIP_DIST)|g' \
	    -e "s|@USERGROUP@|$$ug|" conf/run.conf.in > $@

# A self-signed certificate for the wss:// port of make run, made once.
$(RUNDIR)/tls/server.crt:
	mkdir -p $(RUNDIR)/tls
	openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj /CN=127.0.0.1 \
	  -addext 'subjectAltName=IP:127.0.0.1,DNS:localhost' \
	  -addext 'basicConstraints=critical,CA:FALSE' \
	  -keyout $(RUNDIR)/tls/server.key -out $@.tmp 2>/dev/null
	chmod 600 $(RUNDIR)/tls/server.key
	mv $@.tmp $@

run-deps:
	$(call apt_install,$(RUN_PKGS))

run: run-deps all $(NODE_STAMP) $(RUNDIR)/httpd.conf $(RUNDIR)/tls/server.crt
	-@[ -f $(RUNDIR)/run/httpd.pid ] && $(HTTPD) -f $(RUNDIR)/httpd.conf -k stop && sleep 1 || true
	$(HTTPD) -f $(RUNDIR)/httpd.conf -t
	$(HTTPD) -f $(RUNDIR)/httpd.conf -k start
	@echo "mod_sip is serving $(CURDIR)/sip-cgi-bin on 127.0.0.1:5060 (UDP and TCP)."
	@echo "Browser phone: http://127.0.0.1:8060/phone/ (ws://) and https://127.0.0.1:8443/phone/ (wss://)"
	@echo "Logs: $(RUNDIR)/logs/error.log   Status: http://127.0.0.1:8060/server-status   Stop: make stop"

stop:
	-$(HTTPD) -f $(RUNDIR)/httpd.conf -k stop

# Unit tests (Check) for the pure parsers and helpers.
UNIT_TESTS = t/unit/test_units
$(UNIT_TESTS): t/unit/test_units.c t/unit/httpd_stubs.h $(filter-out mod_sip.c sip_engine.c sip_request.c sip_ws_upgrade.c,$(SOURCES)) $(HEADERS) $(GENERATED)
	$(CC) -g -O1 -Wall -Wextra -Wno-unused-parameter $(EXTRA_CFLAGS) \
	  -I. -I$$($(APXS) -q INCLUDEDIR) $$(pkg-config --cflags apr-1 apr-util-1 check) $(XML_CFLAGS) $(ICAL_CFLAGS) \
	  -o $@ t/unit/test_units.c $$(pkg-config --libs apr-1 apr-util-1 check) $(LIBS) $(EXTRA_LDFLAGS)

unit: test-deps $(UNIT_TESTS)
	./$(UNIT_TESTS)

# prove exits 0 when it ran nothing: insist on its "Result: PASS" line.
PROVE_ENV ?=
PROVE_LOG ?= t/prove.log
prove: test-deps all $(NODE_STAMP)
	@ls t/*.t >/dev/null 2>&1 || { echo "no tests in t/"; exit 1; }
	set -o pipefail; $(PROVE_ENV) prove -I t/lib t/ 2>&1 | tee $(PROVE_LOG)
	@grep -q '^Result: PASS' $(PROVE_LOG)

# The transaction, proxy and SIP-CGI files with two engines (SipEngines 2,
# issue 19): a request, its CANCEL and ACK and its responses may land on
# different engines; the registrar, flow, outbound, NAT and Path files
# with t/engines-location.t (locations and flows across engines); and the
# FastCGI files (a pool per engine; t/fcgi-load.t sets SipEngines 2 itself).
# ENGINES2_NEED_LOCATIONS: files to leave out (none since the replicas).
ENGINES2_NEED_LOCATIONS ?=
# Known gaps with two engines: files to leave out while a gap is open (none:
# the shared nonce key, SipFlowsDead on every engine, stream CANCEL/ACK
# queries and the TLS subject in REGISTER hand-overs closed the last ones).
ENGINES2_KNOWN_GAPS ?=
ENGINES2_TESTS ?= $(filter-out $(ENGINES2_NEED_LOCATIONS) $(ENGINES2_KNOWN_GAPS), t/50-transactions.t \
                  $(wildcard t/9[0-5]-proxy-*.t) t/proxy-wire.t t/proxy-accepted.t $(wildcard t/cgi-*.t) t/engines.t \
                  t/engines-auth.t t/engines-nonce-replay.t t/tls.t \
                  t/engines-location.t $(wildcard t/reg-*.t) $(wildcard t/flows*.t) t/outbound.t \
                  t/nat.t t/path.t t/fcgi.t t/fcgi-mpx.t t/fcgi-retry.t t/fcgi-orphans.t)
test-engines2: test-deps all
	set -o pipefail; SIP_TEST_ENGINES=2 prove -I t/lib $(ENGINES2_TESTS) 2>&1 \
	  | tee t/prove-engines2.log
	@grep -q '^Result: PASS' t/prove-engines2.log

# The same suite against a module built with ASan+UBSan, preloaded into the
# (uninstrumented) Debian httpd; the harness fails on any sanitizer report.
ASAN_LIBS = $(shell $(CC) -print-file-name=libasan.so) $(shell $(CC) -print-file-name=libubsan.so)
asan/.libs/mod_sip.so: $(SOURCES) $(HEADERS) $(GENERATED) Makefile
	@test -x "$(APXS)" || $(MAKE) deps
	mkdir -p asan && cp $(SOURCES) $(HEADERS) $(GENERATED) asan/
	cd asan && $(APXS) -c $(CWARN) $(PATH_DEFS) $(XML_CFLAGS) $(ICAL_CFLAGS) $(SSL_CFLAGS) -Wc,-fsanitize=address,undefined -Wc,-fno-omit-frame-pointer \
	  -Wl,-fsanitize=address,undefined -o mod_sip.la $(SOURCES) $(LIBS)

test-asan: test-deps asan/.libs/mod_sip.so
	$(MAKE) prove PROVE_LOG=t/prove-asan.log \
	  PROVE_ENV="MOD_SIP_SO=$(CURDIR)/asan/.libs/mod_sip.so MOD_SIP_PRELOAD='$(ASAN_LIBS)'"

# CI: both suites at once (they mostly wait on timers, so two cores run
# them side by side in about the time of one), each with its own log;
# node_modules first, as two npm ci at once would remove each other's files.
ci: test-deps all asan/.libs/mod_sip.so $(NODE_STAMP) unit
	@rc=0; rm -f t/crash-context.log; \
	{ $(MAKE) --no-print-directory prove && $(MAKE) --no-print-directory test-engines2; } \
	  > t/ci-plain.out 2>&1 & p1=$$!; \
	$(MAKE) --no-print-directory test-asan > t/ci-asan.out 2>&1 & p2=$$!; \
	wait $$p1 || rc=1; wait $$p2 || rc=1; \
	tail -n 25 t/ci-plain.out; echo "== ASan+UBSan =="; tail -n 25 t/ci-asan.out; \
	grep -E '^(t/.*\.t \.+ (Failed|Dubious)|Failed test|not ok)' t/ci-plain.out t/ci-asan.out | head -50; \
	if test -s t/crash-context.log; then echo "== crash reports (t/crash-context.log) =="; tail -n 120 t/crash-context.log; fi; \
	exit $$rc

# `make test WITH_ASAN=1` (CI) is `make ci`: the ASan suite beside the plain one.
ifeq ($(WITH_ASAN),1)
test: ci
else
test: test-deps all $(NODE_STAMP) unit prove
endif

# A part of the suite with httpd (and so the SIP engine, forked from it)
# under valgrind: no memory error and no definite leak in any process.
VALGRIND_TESTS ?= t/proxy-accepted.t t/10-options.t t/options-stateless.t t/httpd-exit.t t/engines-replica-order.t t/engines-nonce-replay.t t/fcgi-retry.t t/20-scripts.t t/50-transactions.t t/90-proxy-call.t \
                  t/reg-raw.t t/auth-require.t t/cgi-proxy.t t/robust-torture.t \
                  t/error-docs.t t/status.t t/relay.t t/proxy-wire.t t/cgi-local-target.t \
                  t/auth-strict.t t/upload-exec.t t/reg-payload.t t/dns.t
test-valgrind: test-deps all
	$(call apt_install,valgrind)
	rm -rf t/valgrind.out && mkdir -p t/valgrind.out && chmod 1777 t/valgrind.out
	set -o pipefail; APACHE2=$(CURDIR)/t/valgrind-apache2 VALGRIND_LOGDIR=$(CURDIR)/t/valgrind.out \
	  prove -I t/lib $(VALGRIND_TESTS) 2>&1 | tee t/prove-valgrind.log
	@grep -q '^Result: PASS' t/prove-valgrind.log
	@grep -l -- '-k start' t/valgrind.out/vg.* >/dev/null || { echo "valgrind ran no httpd"; exit 1; }
	@! grep -l 'ERROR SUMMARY: [1-9]' t/valgrind.out/vg.* || { echo "valgrind found errors (logs above)"; exit 1; }
	@echo "valgrind: $$(grep -l 'ERROR SUMMARY: 0 errors' t/valgrind.out/vg.* | wc -l) processes, no errors"

clean:
	rm -rf .libs *.la *.lo *.slo *.o asan $(SUEXEC) $(GENERATED) $(UNIT_TESTS) $(RUNDIR) t/prove.log t/prove-asan.log t/ci-plain.out t/ci-asan.out t/prove-valgrind.log t/prove-engines2.log t/valgrind.out $(FUZZ_BINS) fuzz/out

# libFuzzer targets (clang): parsers and everything fed by the network or
# by scripts.  make fuzz runs each for FUZZ_SECONDS from fuzz/corpus/.
FUZZ_TARGETS = parse cgi_output frame uri mime cpl cpl_run cpl_time uri_list consent explode lists rules namemap ws fcgi stun journal dns handover regscan
FUZZ_BINS    = $(FUZZ_TARGETS:%=fuzz/fuzz_%)
FUZZ_SECONDS ?= 60
FUZZ_PKGS    = $(BUILD_PKGS) clang libclang-rt-14-dev

fuzz-deps:
	$(call apt_install,$(FUZZ_PKGS))

fuzz/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_common.h t/unit/httpd_stubs.h $(SOURCES) $(HEADERS) $(GENERATED)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	  -Wno-unused-function -I. -I$$($(APXS) -q INCLUDEDIR) $$(pkg-config --cflags apr-1 apr-util-1) $(XML_CFLAGS) $(ICAL_CFLAGS) \
	  -o $@ $< $$(pkg-config --libs apr-1 apr-util-1) $(LIBS)

fuzz: fuzz-deps $(FUZZ_BINS)
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/out/$$t; \
	  echo "== fuzz_$$t for $(FUZZ_SECONDS)s"; \
	  ./fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	    -print_final_stats=1 fuzz/out/$$t fuzz/corpus/$$t || exit 1; \
	done

# ---- load tests (bench/): mod_sip against Kamailio 5.6 on 127.0.0.1 ----
# make bench [BENCH_ARGS="--only options,register --step-seconds 3"]
# make soak  [SOAK_RATE=2000] [SOAK_SECONDS=600]
# Both append a dated section to bench/RESULTS.md; see bench/README.md.
BENCH_PKGS   = $(BUILD_PKGS) perl sip-tester kamailio kamailio-cpl-modules libaprutil1-dbd-sqlite3 gcc libc6-dev \
               kamailio-tls-modules kamailio-websocket-modules libssl-dev openssl socat linux-perf \
               python3 kamailio-python3-modules kamailio-lua-modules libfcgi-dev
SOAK_PKGS    = $(BUILD_PKGS) perl sip-tester
BENCH_ARGS  ?=
SOAK_RATE   ?= 2000
SOAK_SECONDS ?= 600
SOAK_CALL_RATE ?= 50
SOAK_CGI_RATE ?= 10
SOAK_ENGINES ?=

.PHONY: bench soak test-valgrind test-engines2

bench:
	$(call apt_install,$(BENCH_PKGS))
	$(MAKE) all
	bench/run $(BENCH_ARGS)

soak:
	$(call apt_install,$(SOAK_PKGS))
	$(MAKE) all
	bench/run --soak --rate $(SOAK_RATE) --seconds $(SOAK_SECONDS) --call-rate $(SOAK_CALL_RATE) \
	    --cgi-rate $(SOAK_CGI_RATE) $(if $(SOAK_ENGINES),--engines $(SOAK_ENGINES))

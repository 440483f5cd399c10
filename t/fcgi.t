#!/usr/bin/perl
# SIP-CGI over FastCGI (issue 18, docs/fastcgi.md): the same Python service
# spawned per request and as resident workers answers alike; engine-managed
# pools (SipFastCGI) restart crashed workers and refuse with 503 +
# Retry-After when exhausted while other calls go on; an external server
# (SipFastCGIConnect) is used over kept connections; malformed records are
# refused and logged and the engine lives on.  With SipEngines 2 (make
# test-engines2) every engine has its own pools: the checks of one pool's
# state send from sockets that reach engine 0, and mod_status sums the
# engines' pools.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use File::Copy ();
use SipTest qw(parse_msg wait_until);

my $repo = SipTest->repo;
my $t = SipTest->new(
    start => 0,
    server_conf => "LoadModule status_module $SipTest::MODDIR/mod_status.so\n"
                 . "<Location /server-status>\n    SetHandler server-status\n</Location>\n",
    vhost_conf => <<'EOC',
SipScriptTimeout 2
SipScriptMaxOutput 100000
SipFastCGI @SCRIPTS@/redirect.py 1 2
SipFastCGI @SCRIPTS@/behave.py 1 1
SipFastCGIQueue 0
SipFastCGI @SCRIPTS@/recycle.py 0 1
SipFastCGIMaxRequests 2
SipFastCGIIdleTimeout 1
SipFastCGIConnect ext* unix:@VAR@/ext.sock
SipFastCGIConnect http* unix:@VAR@/bad-http.sock
SipFastCGIConnect otherid* unix:@VAR@/bad-otherid.sock
SipFastCGIConnect stderr* unix:@VAR@/bad-stderr.sock
SipFastCGIConnect down* unix:@VAR@/nobody-listens.sock
EOC
);
my $sd = $t->scripts_dir;
File::Copy::copy("$repo/sip-cgi-bin/$_", "$sd/$_") or die "$_: $!" for qw(sipfcgi.py redirect.py forward.txt);
File::Copy::copy("$repo/t/fcgi/behave.py", "$sd/$_") or die "$_: $!" for qw(behave.py recycle.py);
chmod 0755, "$sd/redirect.py", "$sd/behave.py", "$sd/recycle.py";
symlink('recycle.py', "$sd/recycle\@127.0.0.1") or die;
chmod 0644, "$sd/sipfcgi.py", "$sd/forward.txt";
# spawned: a copy of the same program under a user@host name (not a pool's path)
File::Copy::copy("$sd/redirect.py", "$sd/spawned\@127.0.0.1") and chmod 0755, "$sd/spawned\@127.0.0.1";
# resident: names that resolve to the pools' programs
symlink('redirect.py', "$sd/pooled\@127.0.0.1") or die;
symlink('behave.py', "$sd/$_\@127.0.0.1") or die for qw(crash slow fine env hang huge);
# external: a copy of the program outside the pool, listening itself
# SipFastCGIConnect maps by the selected script's name: the file marks the
# service (never spawned)
$t->write_script("$_\@127.0.0.1", text => "#!/bin/sh\nexit 1\n") for qw(ext http otherid stderr down);
my @servers;
sub bg { my $pid = fork // die; if (!$pid) { exec @_ or exit 127 } push @servers, $pid; return $pid }
my $ext_sock = $t->var . '/ext.sock';
bg("$sd/redirect.py", '--listen', $ext_sock);
bg("$repo/t/fcgi/bad_server.py", $_, $t->var . "/bad-$_.sock") for qw(http otherid stderr);
ok(wait_until(5, sub { -S $ext_sock && -S $t->var . '/bad-stderr.sock' }), 'test servers listening');
chmod 0777, $ext_sock;
$t->start;
my $port = $t->sip_port;
my @engines = $t->engine_pids;
my $E = scalar @engines;    # engines: each starts its pools' min workers
# the checks of one pool's workers or queue talk to engine 0's pool
my $s0 = $t->udp_socket_to_engine(0) or BAIL_OUT('no socket reaches engine 0');
my $ext_s = $t->udp_socket_to_engine(0);
END { kill 'TERM', @servers if @servers; waitpid($_, 0) for @servers }

sub call {
    my ($user, %o) = @_;
    my $s = $o{sock} // $t->udp_socket;
    my $req = $t->sip_request(method => $o{method} // 'INVITE', sock => $s,
                              uri => "sip:$user\@127.0.0.1:$port", body => $o{body} // '',
                              (defined $o{body} ? (content_type => 'text/plain') : ()));
    my $t0 = time;
    my @r = $t->udp_req($req, $o{timeout} // 8, sock => $s);
    my $el = time - $t0;
    if (@r && $r[-1]->is_final && ($o{method} // 'INVITE') eq 'INVITE') {
        $t->udp_send($t->ack_for($req, $r[-1]), sock => $s);
    }
    return wantarray ? ($r[-1], $el) : $r[-1];
}
sub summary {
    my ($r) = @_;
    return 'no response' unless $r;
    return join '|', $r->code, $r->reason, $r->header('contact') // '', $r->header('to') =~ /tag=/ ? 'tag' : 'notag';
}

# ---- the same service spawned and resident answers identically
for my $m (qw(INVITE OPTIONS MESSAGE)) {
    my $sp = call('spawned', method => $m);
    my $po = call('pooled', method => $m);
    my $ex = call('ext', method => $m, sock => $ext_s);
    is(summary($po), summary($sp), "$m: resident worker (SipFastCGI) answers as the spawned script");
    is(summary($ex), summary($sp), "$m: external server (SipFastCGIConnect) answers as the spawned script");
}
is(call('pooled')->code, 302, 'INVITE to the resident redirect: 302');
like(call('pooled')->header('contact'), qr/<sip:bob\@127\.0\.0\.1:5070>/, '... Contact from forward.txt');

# the worker stays: one process serves successive calls
my @pids = map { call('fine', method => 'MESSAGE', sock => $s0)->header('x-worker-pid') } 1 .. 3;
ok($pids[0] && $pids[0] == $pids[1] && $pids[1] == $pids[2], "one resident process served 3 calls (@pids)");
my $uid = (stat $t->var . '/..')[4];
if ($> == 0) {
    my $wuid = (stat "/proc/$pids[0]")[4];
    is($wuid, scalar getpwnam('www-data'), 'the worker runs as httpd\'s user');
}

# the environment is the one a spawned script gets (less what only a process has)
{
    my $r = call('env', method => 'MESSAGE', body => "hello body");
    my %env = map { /^([^=]+)=(.*)$/ ? ($1, $2) : () } split /\n/, $r ? $r->body : '';
    is($env{GATEWAY_INTERFACE}, 'SIP-CGI/1.1', 'FCGI_PARAMS: GATEWAY_INTERFACE');
    is($env{REQUEST_METHOD}, 'MESSAGE', 'FCGI_PARAMS: REQUEST_METHOD');
    is($env{CONTENT_LENGTH}, 10, 'FCGI_PARAMS: CONTENT_LENGTH of the body');
    like($env{SIP_CALL_ID} // '', qr/\@127\.0\.0\.1$/, 'FCGI_PARAMS: SIP_CALL_ID');
    ok(!grep({ /^SIP_AUTHORIZATION|^SIP_PROXY_AUTHORIZATION/ } keys %env), 'no credentials');
}

# ---- a worker crashes mid-transaction: 500, restarted, next call fine
{
    my $mark = $t->log_mark;
    my ($r, $el) = call('crash', method => 'MESSAGE', sock => $s0);
    is($r && $r->code, 500, 'worker crash mid-transaction: 500');
    cmp_ok($el, '<', 3, 'answered promptly');
    ok($t->wait_log($mark, qr/behave\.py \(pid \d+\) exited with status 3/, 3), 'crash logged');
    ok($t->wait_log($mark, qr/behave: crashing on purpose/, 3), "the worker's FCGI_STDERR reached the error log");
    my $ok;
    wait_until(3, sub { $ok = call('fine', method => 'MESSAGE', sock => $s0); $ok && $ok->code == 200 }, 0.2);
    is($ok && $ok->code, 200, 'the restarted worker answers the next call');
    isnt($ok && $ok->header('x-worker-pid'), $pids[0], '... from a new process');
}

# ---- slow worker, pool exhausted (max 1, queue 0): 503 + Retry-After, others served
{
    my $s1 = $t->udp_socket_to_engine(0);
    my $req = $t->sip_request(method => 'MESSAGE', sock => $s1, uri => "sip:slow\@127.0.0.1:$port");
    $t->udp_send($req, sock => $s1);
    sleep 0.3;
    my $st = $t->http_get('/server-status?auto');
    my ($line) = $st =~ /^(SipFastCGIPool: \S*behave\.py .*)$/m;
    like($line // $st, qr/ workers=$E busy=1 queued=0 restarts=1 requests=\d+/,
         'mod_status: the pool\'s worker busy, the earlier crash counted as a restart');
    like($st, qr/^SipFastCGIPool: \S*redirect\.py workers=$E busy=0 /m, 'mod_status: the other pool idle');
    like($st, qr/^SipFastCGIPool: unix:\S*ext\.sock workers=1 busy=0 queued=0 restarts=0 requests=3$/m,
         'mod_status: the external server: one kept connection for its 3 requests');
    my ($r, $el) = call('fine', method => 'MESSAGE', sock => $s0);
    is($r && $r->code, 503, 'pool exhausted: 503');
    ok($r && defined $r->header('retry-after'), '... with Retry-After');
    cmp_ok($el, '<', 1, '... at once');
    my ($o, $oel) = call('x', method => 'OPTIONS');
    ok($o && $o->code, 'OPTIONS answered meanwhile') and cmp_ok($oel, '<', 1, '... at once');
    my ($p, $pel) = call('pooled');
    is($p && $p->code, 302, 'another pool serves meanwhile');
    my @slow;
    my $end = time + 4;
    while (time < $end) {
        my $d = $t->udp_recv($s1, $end - time) // last;
        my $m = parse_msg($d);
        push @slow, $m;
        last if $m->is_final;
    }
    is(@slow && $slow[-1]->code, 200, 'the slow call itself completes (200)');
}

# ---- SipScriptTimeout and SipScriptMaxOutput apply to a FastCGI request
{
    my $before = call('fine', method => 'MESSAGE', sock => $s0);
    my $wpid = $before ? $before->header('x-worker-pid') : 0;
    my $mark = $t->log_mark;
    my ($r, $el) = call('hang', method => 'MESSAGE', sock => $s0);
    is($r && $r->code, 500, 'a worker past SipScriptTimeout: 500');
    ok($el > 1.5 && $el < 4, sprintf('... after the timeout (%.1f s)', $el));
    ok($t->wait_log($mark, qr/behave\.py: script timed out/, 3), '... logged');
    ok(wait_until(3, sub { !kill(0, $wpid) }, 0.1), "... and the stuck worker ($wpid) killed");
    my $ok;
    wait_until(4, sub { $ok = call('fine', method => 'MESSAGE', sock => $s0); $ok && $ok->code == 200 }, 0.2);
    is($ok && $ok->code, 200, '... and replaced');
    $mark = $t->log_mark;
    ($r) = call('huge', method => 'MESSAGE');
    is($r && $r->code, 500, 'output past SipScriptMaxOutput: 500');
    ok($t->wait_log($mark, qr/behave\.py: output exceeds SipScriptMaxOutput/, 3), '... logged');
}

# ---- SipFastCGIMaxRequests 2: a new worker every 2 requests; min 0 and
# SipFastCGIIdleTimeout 1: none left a moment after the last call
{
    my @rp = map { my $r = call('recycle', method => 'MESSAGE', sock => $s0); $r ? $r->header('x-worker-pid') // 0 : 0 } 1 .. 4;
    ok($rp[0] && $rp[0] == $rp[1] && $rp[2] && $rp[2] == $rp[3] && $rp[1] != $rp[2],
       "SipFastCGIMaxRequests 2: workers @rp");
    ok(wait_until(4, sub { $t->http_get('/server-status?auto') =~ /^SipFastCGIPool: \S*recycle\.py workers=0 /m }, 0.2),
       'SipFastCGIIdleTimeout: the idle worker above min 0 is stopped');
    ok(!kill(0, $rp[3]), '... and reaped (no such process)');
    is(call('recycle', method => 'MESSAGE')->code, 200, 'the pool grows again on the next call');
}

# ---- malformed records: refused, logged, engine alive
for my $case ([http => qr/not a FastCGI version 1 record/], [otherid => qr/record for another request/],
              [stderr => qr/too much STDERR/]) {
    my ($name, $why) = @$case;
    my $mark = $t->log_mark;
    my ($r, $el) = call($name, method => 'MESSAGE');
    is($r && $r->code, 500, "$name: malformed answer -> 500");
    ok($t->wait_log($mark, qr/malformed FastCGI record.*$why/, 3), "$name: refused and logged")
        or diag($t->log_since($mark));
}
{
    my $mark = $t->log_mark;
    my ($r, $el) = call('down', method => 'MESSAGE');
    is($r && $r->code, 500, 'a FastCGI server that is not there: 500');
    cmp_ok($el, '<', 1, '... at once');
    ok($t->wait_log($mark, qr/sip-fcgi: cannot connect to unix:\S*nobody-listens\.sock/, 3), '... logged');
}
is_deeply([$t->engine_pids], \@engines, 'no engine restarted');
ok($t->options_ok, 'engine still answers');

# ---- mod_status shows the pools (checked in the counters segment through the engine's log-free path)
# ---- graceful restart: the old engine's workers go, the new engine starts its own
{
    my $old = call('fine', method => 'MESSAGE');
    my $old_pid = $old ? $old->header('x-worker-pid') : 0;
    ok($t->apachectl('graceful'), 'apache2 -k graceful');
    my $new_engine = wait_until(10, sub { my $p = $t->engine_pid; $p && $p != $engines[0] ? $p : 0 }, 0.1);
    ok($new_engine, 'a new engine after graceful');
    ok(wait_until(5, sub { !kill(0, $old_pid) }, 0.1), "the old engine's worker ($old_pid) is gone");
    my $r;
    wait_until(5, sub { $r = call('fine', method => 'MESSAGE'); $r && $r->code == 200 }, 0.2);
    ok($r && $r->code == 200 && $r->header('x-worker-pid') != $old_pid, 'the new engine\'s pool answers');
    is(call('pooled')->code, 302, 'the resident redirect too');
}

# ---- stop: no worker left behind, no zombie
my @workers = $t->procs_matching("$sd/behave.py");
ok(@workers, 'pool workers exist while running');
kill 'TERM', @servers;
waitpid($_, 0) for @servers;
@servers = ();
$t->stop;   # checks that no process of the test dir is left (pool workers included)
ok(!$t->procs_matching("$sd/behave.py"), 'no pool worker after stop');
done_testing;

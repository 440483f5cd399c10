#!/usr/bin/perl
# mod_status: /server-status on the HTTP side of the same httpd shows the
# mod_sip counters, and they move by exactly what real SIP traffic does:
# OPTIONS over UDP and TCP, a REGISTER, a proxied request, an INVITE run by a
# script, malformed messages, scripts that hang, crash or print garbage.
# Totals survive a graceful restart and an engine crash; the "now" values
# start again with each engine.  Without ProtocolSip there is no section.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::INET;
use IO::Select;
use SipTest qw(parse_msg wait_until rand_token);
use SipRegTest;

my $STATUS_CONF = <<"EOC";
LoadModule status_module $SipTest::MODDIR/mod_status.so
<Location /server-status>
    SetHandler server-status
</Location>
EOC

# SIP_TEST_ENGINES=2 (make test-engines2): the same counters, summed over two engines.
my $ENGINES = $ENV{SIP_TEST_ENGINES} || 1;

# Every counter that only grows; a phase must move exactly the ones it names.
my @TOTALS = qw(
    SipEngineRestarts SipEngineCrashes
    SipTransactionsTotal SipClientTransactionsTotal SipClientTransactionTimeouts
    SipResponses2xx SipResponses3xx SipResponses4xx SipResponses5xx SipResponses6xx
    SipScriptsTotal SipScriptsFailed SipScriptTimeouts SipScriptCrashes SipScriptBadOutput
    SipScriptStartFailures SipScriptsRefused SipRegistersAccepted
    SipUdpMessagesIn SipUdpMessagesOut SipTcpMessagesIn SipTcpMessagesOut
    SipTcpConnectionsTotal SipBadMessages SipSendErrors SipStunBindings SipStunDropped
);
my @GAUGES = qw(SipEnginePid SipEngineUptime SipTransactionsNow SipClientTransactionsNow
                SipScriptsRunning SipRegistrationsNow SipTcpConnectionsNow SipProxyStatesNow);

# GET over HTTP/1.0 (no chunking): (status code, body).
sub http {
    my ($t, $path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->http_port,
                                  Proto => 'tcp', Timeout => 5) or return (0, '');
    print $s "GET $path HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    my $sel = IO::Select->new($s);
    my $buf = '';
    my $end = time + 5;
    while ($sel->can_read($end - time > 0 ? $end - time : 0)) {
        my $n = sysread($s, my $b, 65536) or last;
        $buf .= $b;
    }
    my ($code) = $buf =~ m{^HTTP/1\.\d (\d{3})};
    my (undef, $body) = split /\r\n\r\n/, $buf, 2;
    return ($code // 0, $body // '');
}

# The ?auto counters as a hash (undef when the page cannot be fetched).
sub stats {
    my ($t) = @_;
    my ($code, $body) = http($t, '/server-status?auto');
    return undef unless $code == 200;
    my %s;
    $s{$1} = $2 while $body =~ /^(Sip\w+): (\d+)$/mg;
    return \%s;
}

my $t = SipRegTest->new(
    server_conf => $STATUS_CONF,
    vhost_conf  => 'SipScriptTimeout 3',
    scripts     => {
        'slow486@127.0.0.1' => "#!/bin/sh\n/bin/sleep 1\nprintf 'SIP/2.0 486 Busy Here\\n\\n'\n",
        'hang@127.0.0.1'    => "#!/bin/sh\n/bin/sleep 30.5151\nprintf 'SIP/2.0 200 OK\\n\\n'\n",
        'crash@127.0.0.1'   => "#!/bin/sh\nkill -SEGV \$\$\nprintf 'SIP/2.0 200 OK\\n\\n'\n",
        'garbage@127.0.0.1' => "#!/bin/sh\necho 'this is not SIP-CGI output'\n",
    },
);
my $port = $t->sip_port;

# Wait until every counter in %want has moved by at least its amount since
# $before, give late increments a moment, then assert that the totals moved by
# exactly %want and nothing else.  Returns the new snapshot.
sub moved {
    my ($label, $before, %want) = @_;
    my $after;
    wait_until(8, sub {
        $after = stats($t) or return 0;
        !grep { ($after->{$_} // 0) - ($before->{$_} // 0) < $want{$_} } keys %want;
    }, 0.1);
    sleep 0.3;
    $after = stats($t) // $after // {};
    my %delta;
    for my $k (@TOTALS) {
        my $d = ($after->{$k} // -1) - ($before->{$k} // -1);
        $delta{$k} = $d if $d;
    }
    is_deeply(\%delta, \%want, "$label: counters moved by exactly this")
        or diag(explain({ got => \%delta, expected => \%want }));
    return $after;
}

# ---------------------------------------------------------------- the page
my $s0 = stats($t);
ok($s0, 'GET /server-status?auto answered 200 over HTTP') or BAIL_OUT('no status page');
my @missing = grep { !defined $s0->{$_} } @TOTALS, @GAUGES;
ok(!@missing, 'every counter is on the ?auto page as "SipName: number"')
    or diag("missing: @missing");
is($s0->{SipEnginePid}, $t->engine_pid, 'SipEnginePid is the running engine');
cmp_ok($s0->{SipEngineUptime}, '<', 60, 'SipEngineUptime counts from this engine\'s start');
is($s0->{SipEngineRestarts}, 0, 'no engine restart yet');
is($s0->{SipEngineCrashes}, 0, 'no engine crash yet');
cmp_ok($s0->{SipUdpMessagesIn}, '>=', 1, 'the harness\'s start-up OPTIONS was counted');

# The harness's start-up probes (TCP connects, UDP OPTIONS) may still be
# reaching the engine: start from counters that stay put for a while, with
# the probe connections closed.
my $s = {};
ok(wait_until(10, sub {
    my $a = stats($t) or return 0;
    sleep 0.5;
    $s = stats($t) or return 0;
    return 0 if $s->{SipTcpConnectionsNow} != 0;
    return !grep { $a->{$_} != $s->{$_} } @TOTALS;
}, 0.1), 'counters settle after start-up, SipTcpConnectionsNow 0 with no SIP connection open')
    or diag(explain($s));
cmp_ok($s->{SipTcpConnectionsTotal}, '>=', 1, 'the harness\'s start-up TCP connection was counted');
moved('HTTP requests only', $s);

{
    my ($code, $html) = http($t, '/server-status');
    is($code, 200, 'GET /server-status (HTML) answered 200');
    like($html, qr{<h2>mod_sip</h2>}, 'the HTML page has the mod_sip section');
    like($html, qr{<td title="SipUdpMessagesIn">[^<]*</td><td align="right">$s->{SipUdpMessagesIn}</td>},
         'the HTML table shows the same UDP count as ?auto');
    like($html, qr{SIP engine ${\ $t->engine_pid} started}, 'the HTML page names the engine');
    ($code, $html) = http($t, '/server-status?notable');
    my ($sect) = $html =~ m{(<h2>mod_sip</h2>.*)}s;
    ok($sect && $sect !~ /<table/ && $sect =~ m{<dt title="SipBadMessages">},
       '?notable: the section is a definition list, no table');
}

# ---------------------------------------------------------------- OPTIONS over UDP
{
    my @r = $t->transact('udp', method => 'OPTIONS', uri => "sip:nobody\@127.0.0.1:$port",
                         sock => $t->udp_socket);
    is(@r && $r[-1]->code, 200, 'UDP OPTIONS answered 200');
    $s = moved('UDP OPTIONS', $s, SipUdpMessagesIn => 1, SipUdpMessagesOut => 1,
               SipTransactionsTotal => 1, SipResponses2xx => 1);
    # RFC 3261 §8.2.7: the server's own answer to OPTIONS keeps no state
    is($s->{SipTransactionsNow}, 0, 'SipTransactionsNow 0: the answered OPTIONS kept no transaction');
}

# ---------------------------------------------------------------- OPTIONS over TCP
{
    my $c = $t->tcp_connect;
    my @r = $t->transact('tcp', method => 'OPTIONS', uri => "sip:nobody\@127.0.0.1:$port", sock => $c);
    is(@r && $r[-1]->code, 200, 'TCP OPTIONS answered 200');
    $s = moved('TCP OPTIONS', $s, SipTcpMessagesIn => 1, SipTcpMessagesOut => 1,
               SipTransactionsTotal => 1, SipResponses2xx => 1, SipTcpConnectionsTotal => 1);
    is($s->{SipTcpConnectionsNow}, 1, 'SipTcpConnectionsNow 1 while the connection is open');
    close $c;
    my $now;
    ok(wait_until(5, sub { $now = stats($t)->{SipTcpConnectionsNow}; $now == 0 }, 0.1),
       'SipTcpConnectionsNow back to 0 once the client closed') or diag("now: $now");
}

# ---------------------------------------------------------------- REGISTER
my $phone = $t->udp_socket;
{
    my $r = $t->register(user => 'bob', contacts => [ '<sip:bob@127.0.0.1:' . $phone->sockport . '>' ],
                         expires => 600);
    is($r && $r->code, 200, 'REGISTER accepted');
    $s = moved('REGISTER', $s, SipUdpMessagesIn => 1, SipUdpMessagesOut => 1,
               SipTransactionsTotal => 1, SipResponses2xx => 1, SipRegistersAccepted => 1);
    # the hand-over to the AoR's home and the replicas are asynchronous
    my $now = $s->{SipRegistrationsNow};
    ok(wait_until(5, sub { $now = stats($t)->{SipRegistrationsNow}; $now == 1 }, 0.1),
       'SipRegistrationsNow 1 (once, whatever the number of engines)') or diag("now: $now");
    cmp_ok($s->{SipTransactionsNow}, '>=', 1,
           'SipTransactionsNow counts the completed UDP REGISTER transaction (timer J)');
}

# ---------------------------------------------------------------- a proxied request
{
    my $caller = $t->udp_socket;
    my $req = $t->sip_request(method => 'OPTIONS', uri => "sip:bob\@127.0.0.1:$port", sock => $caller);
    $t->udp_send($req, sock => $caller);
    my $fwd = $t->udp_recv($phone, 5);
    ok($fwd && $fwd =~ /^OPTIONS sip:bob\@127\.0\.0\.1:\d+ SIP\/2\.0/, 'OPTIONS proxied to the registered contact');
    my $mid = stats($t);
    is($mid->{SipClientTransactionsNow}, 1, 'SipClientTransactionsNow 1 while the branch is pending');
    my $m = parse_msg($fwd // "OPTIONS sip:x SIP/2.0\r\n\r\n");
    my $resp = "SIP/2.0 200 OK\r\n"
        . join('', map { "Via: $_\r\n" } $m->headers('via'))
        . 'From: ' . ($m->header('from') // '') . "\r\n"
        . 'To: ' . ($m->header('to') // '') . ";tag=phone\r\n"
        . 'Call-ID: ' . ($m->header('call-id') // '') . "\r\n"
        . 'CSeq: ' . ($m->header('cseq') // '') . "\r\n"
        . "Content-Length: 0\r\n\r\n";
    $t->udp_send($resp, sock => $phone);
    my $got = $t->udp_recv($caller, 5);
    like($got // '', qr{^SIP/2\.0 200 }, 'the phone\'s 200 relayed to the caller');
    $s = moved('proxied OPTIONS', $s, SipUdpMessagesIn => 2, SipUdpMessagesOut => 2,
               SipTransactionsTotal => 1, SipClientTransactionsTotal => 1, SipResponses2xx => 1);
    my $now;
    ok(wait_until(10, sub { $now = stats($t)->{SipClientTransactionsNow}; $now == 0 }, 0.2),
       'SipClientTransactionsNow back to 0 after timer K') or diag("now: $now");
}

# ---------------------------------------------------------------- INVITE run by a script (TCP)
{
    my $c = $t->tcp_connect;
    my $inv = $t->sip_request(method => 'INVITE', transport => 'TCP', sock => $c,
                              uri => "sip:slow486\@127.0.0.1:$port",
                              headers => [ Contact => '<sip:caller@127.0.0.1:5999;transport=tcp>' ]);
    $t->send_raw($c, $inv);
    my $first = $t->read_response($c, 3);
    is($first && $first->code, 100, 'INVITE: 100 Trying while the script sleeps');
    my $mid = stats($t);
    is($mid->{SipScriptsRunning}, 1, 'SipScriptsRunning 1 while the script runs');
    cmp_ok($mid->{SipTransactionsNow}, '>=', 1, 'SipTransactionsNow counts the INVITE');
    my @r = $t->read_until_final($c, 10);
    is(@r && $r[-1]->code, 486, 'the script\'s 486 arrives');
    $t->send_raw($c, $t->ack_for($inv, $r[-1])) if @r;
    $s = moved('INVITE by a script over TCP', $s, SipTcpMessagesIn => 2, SipTcpMessagesOut => 2,
               SipTcpConnectionsTotal => 1, SipTransactionsTotal => 1, SipScriptsTotal => 1,
               SipResponses4xx => 1);
    is($s->{SipScriptsRunning}, 0, 'SipScriptsRunning 0 after the script ended');
    close $c;
}

# ---------------------------------------------------------------- malformed messages
{
    my $u = $t->udp_socket;
    $t->udp_send("this is not SIP\r\n\r\n", sock => $u);
    my $bad = $t->sip_request(method => 'MESSAGE', uri => "sip:nobody\@127.0.0.1:$port", sock => $u,
                              omit => ['Call-ID']);
    $t->udp_send($bad, sock => $u);
    my $r = $t->udp_recv($u, 3);
    like($r // '', qr{^SIP/2\.0 400 }, 'a request without Call-ID gets 400 (the garbage nothing)');
    $s = moved('malformed messages', $s, SipUdpMessagesIn => 2, SipUdpMessagesOut => 1,
               SipBadMessages => 2);
}

# ---------------------------------------------------------------- failing scripts
sub message_to {
    my ($user) = @_;
    my @r = $t->transact('udp', method => 'MESSAGE', uri => "sip:$user\@127.0.0.1:$port",
                         sock => $t->udp_socket, timeout => 10);
    return @r ? $r[-1]->code : 0;
}
{
    my $u = $t->udp_socket;
    $t->udp_send($t->sip_request(method => 'MESSAGE', uri => "sip:hang\@127.0.0.1:$port", sock => $u),
                 sock => $u);
    my $now;
    ok(wait_until(2, sub { $now = stats($t)->{SipScriptsRunning}; $now == 1 }, 0.05),
       'SipScriptsRunning 1 while a script hangs') or diag("now: $now");
    my $r = $t->udp_recv($u, 6);
    like($r // '', qr{^SIP/2\.0 500 }, 'hanging script: 500 after SipScriptTimeout');
    $s = moved('script timeout', $s, SipUdpMessagesIn => 1, SipUdpMessagesOut => 1,
               SipTransactionsTotal => 1, SipScriptsTotal => 1, SipScriptsFailed => 1,
               SipScriptTimeouts => 1, SipResponses5xx => 1);
    is($s->{SipScriptsRunning}, 0, 'SipScriptsRunning 0 after the timeout');
}
is(message_to('crash'), 500, 'crashing script: 500');
$s = moved('script crash', $s, SipUdpMessagesIn => 1, SipUdpMessagesOut => 1,
           SipTransactionsTotal => 1, SipScriptsTotal => 1, SipScriptsFailed => 1,
           SipScriptCrashes => 1, SipResponses5xx => 1);
is(message_to('garbage'), 500, 'script printing garbage: 500');
$s = moved('script bad output', $s, SipUdpMessagesIn => 1, SipUdpMessagesOut => 1,
           SipTransactionsTotal => 1, SipScriptsTotal => 1, SipScriptsFailed => 1,
           SipScriptBadOutput => 1, SipResponses5xx => 1);

# ---------------------------------------------------------------- graceful restart
{
    my $old = $t->engine_pid;
    cmp_ok($s->{SipTransactionsNow}, '>', 0, 'before the restart the engine still holds transactions');
    ok($t->apachectl('graceful'), 'apache2 -k graceful');
    my $new;
    ok(wait_until(10, sub { $new = $t->engine_pid; $new && $new != $old }, 0.1), 'a new engine after graceful');
    my $g;
    ok(wait_until(10, sub { $g = stats($t); $g && $g->{SipEnginePid} == ($new // -1) }, 0.1),
       'SipEnginePid names the new engine') or diag(explain($g));
    # every engine is restarted, and each restart counts
    $s = moved('graceful restart', $s, SipEngineRestarts => $ENGINES);
    is($s->{SipTransactionsNow}, 0, 'SipTransactionsNow starts again at 0 with the new engine');
    # the journal replay may come after the new engine's first status
    my $now;
    ok(wait_until(5, sub { $now = stats($t)->{SipRegistrationsNow}; $now == 1 }, 0.1),
       'SipRegistrationsNow: the binding reloaded from the journal') or diag("now: $now");
    is($s->{SipScriptsRunning}, 0, 'SipScriptsRunning 0');
    is($s->{SipTcpConnectionsNow}, 0, 'SipTcpConnectionsNow 0');
    ok($t->options_ok('udp'), 'OPTIONS answered after graceful');
    $s = moved('UDP OPTIONS after graceful', $s, SipUdpMessagesIn => 1, SipUdpMessagesOut => 1,
               SipTransactionsTotal => 1, SipResponses2xx => 1);
}

# ---------------------------------------------------------------- engine crash
{
    my $old = $t->engine_pid;
    kill 'KILL', $old;
    my $new;
    ok(wait_until(10, sub { $new = $t->engine_pid; $new && $new != $old }, 0.1),
       'a new engine after kill -9');
    ok(wait_until(10, sub { my $g = stats($t); $g && $g->{SipEnginePid} == ($new // -1) }, 0.1),
       'SipEnginePid names the restarted engine');
    $s = moved('engine killed', $s, SipEngineRestarts => 1, SipEngineCrashes => 1);
    is($s->{SipTransactionsNow}, 0, 'SipTransactionsNow 0 in the restarted engine');
    my $now;
    ok(wait_until(5, sub { $now = stats($t)->{SipRegistrationsNow}; $now == 1 }, 0.1),
       'SipRegistrationsNow 1 again (journal)') or diag("now: $now");
}

ok(!$t->crash_lines, 'no crash in the error log');
$t->stop;

# ---------------------------------------------------------------- no SIP, no section
{
    my $u = SipTest->new(start => 0, server_conf => $STATUS_CONF, vhost_conf => 'ProtocolSip Off');
    $u->write_conf;
    ok($u->apachectl('start'), 'httpd without a ProtocolSip On vhost started');
    $u->{running} = 1;
    my ($code, $body) = (0, '');
    wait_until(10, sub { ($code, $body) = http($u, '/server-status?auto'); $code == 200 }, 0.1);
    is($code, 200, 'its /server-status?auto answers');
    like($body, qr/^Total Accesses: |^ServerVersion: /m, 'mod_status\'s own lines are there');
    unlike($body, qr/^Sip/m, 'no Sip counters without ProtocolSip On');
    ($code, $body) = http($u, '/server-status');
    unlike($body, qr/mod_sip/, 'no mod_sip section in the HTML page either');
    $u->stop;
}

done_testing;

#!/usr/bin/perl
# SIP access logging through mod_log_config (ap_run_log_transaction): one
# line per transaction when its final response is sent, none for 1xx or
# ACK, CustomLog formats including request headers and conditions.
use strict;
use warnings;
use Test::More;
use SipTest qw(parse_msg wait_until);

my $t = SipTest->new(
    vhost_conf => join("\n",
        'LogFormat "%h %{From}i %{To}i %t \\"%r\\" %>s %{SIP_TRANSPORT}e %{Call-ID}i" sip_test',
        'CustomLog @DIR@/logs/sip_access.log sip_test',
        'CustomLog @DIR@/logs/sip_not200.log "%!200{Call-ID}i %>s"',
        'CustomLog @DIR@/logs/sip_out.log "%{Call-ID}i %>s to=%{To}o allow=%{Allow}o server=%{Server}o"',
        # the issue's format, and the sip_common nickname of conf/sip.conf
        'CustomLog @DIR@/logs/sip_full.log "%h %{From}i %{To}i %t \\"%r\\" %>s %T %u"',
        'CustomLog @DIR@/logs/sip_common.log sip_common',
        'CustomLog @DIR@/logs/sip_addr.log "%{Call-ID}i %A %{local}p %p %{remote}p"'),
    server_conf => 'Include ' . SipTest::repo() . '/conf/sip.conf',
    scripts => {
        'ring@127.0.0.1' => "#!/bin/sh\nprintf 'SIP/2.0 180 Ringing\\n\\nSIP/2.0 486 Busy Here\\n\\n'\n",
        'slow@127.0.0.1' => "#!/bin/sh\n/bin/sleep 1.3\nprintf 'SIP/2.0 486 Busy Here\\n\\n'\n",
    },
);
my $port = $t->sip_port;
my $log = $t->dir . '/logs/sip_access.log';
my $not200 = $t->dir . '/logs/sip_not200.log';

sub lines {
    my ($f) = @_;
    open(my $fh, '<', $f) or return ();
    chomp(my @l = <$fh>);
    return @l;
}

# the start-up probe may have logged an OPTIONS already
my $skip = () = lines($log);

my @r = $t->transact('udp', method => 'OPTIONS', uri => "sip:nobody\@127.0.0.1:$port",
                     sock => $t->udp_socket, call_id => 'log-opt@test');
is(@r && $r[-1]->code, 200, 'OPTIONS answered');
@r = $t->transact('tcp', method => 'INVITE', uri => "sip:ring\@127.0.0.1:$port", call_id => 'log-inv@test');
my @codes = map { $_->code } @r;
ok((grep { $_ == 180 } @codes) && $codes[-1] == 486, 'INVITE: 180 then 486') or diag("@codes");

ok(wait_until(3, sub { lines($log) - $skip >= 2 }), 'two access log lines written');
my @l = (lines($log))[$skip .. $skip + 1];
my ($opt) = grep { /log-opt\@test/ } lines($log);
my ($inv) = grep { /log-inv\@test/ } lines($log);
like($opt // '', qr{^127\.0\.0\.1 <sip:[^>]+>;tag=\w+ <sip:nobody\@127\.0\.0\.1:$port> \[[^\]]+\] "OPTIONS sip:nobody\@127\.0\.0\.1:$port SIP/2\.0" 200 UDP log-opt\@test$},
     'OPTIONS line: host, From, To, date, request, status, transport, Call-ID');
like($inv // '', qr{"INVITE sip:ring\@127\.0\.0\.1:$port SIP/2\.0" 486 TCP log-inv\@test$}, 'INVITE line: final status 486 over TCP');
is(scalar(grep { /log-inv\@test/ } lines($log)), 1, 'one line per transaction (the 180 is not logged)');
ok(!(grep { / 180 / } lines($log)), 'no line for a provisional response');

# %A, %{local}p, %p: where the message came in (not the placeholder
# connection's 127.0.0.1:0, nor http's 80); %{remote}p the sender's port
{
    my $addr = $t->dir . '/logs/sip_addr.log';
    ok(wait_until(3, sub { grep { /^log-inv\@test / } lines($addr) }), 'address log written');
    my ($o) = grep { /^log-opt\@test / } lines($addr);
    my ($i) = grep { /^log-inv\@test / } lines($addr);
    like($o // '', qr{^log-opt\@test 127\.0\.0\.1 $port $port \d+$}, '%A %{local}p %p over UDP');
    like($i // '', qr{^log-inv\@test 127\.0\.0\.1 $port $port \d+$}, '%A %{local}p %p over TCP');
    my ($rp) = ($o // '') =~ / (\d+)$/;
    ok($rp && $rp != $port, '%{remote}p is the sender\'s port') or diag($o);
}

ok(wait_until(3, sub { grep { /log-inv\@test 486/ } lines($not200) }), 'conditional format %!200{Call-ID}i: the 486 has its Call-ID');
ok((grep { /^- 200$/ } lines($not200)), 'conditional format: the 200 shows "-" instead');
# %{Name}o: headers of the response that was sent
{
    my $out = $t->dir . '/logs/sip_out.log';
    ok(wait_until(3, sub { grep { /log-inv\@test/ } lines($out) }), '%{...}o log written');
    my ($o) = grep { /log-opt\@test/ } lines($out);
    my ($i) = grep { /log-inv\@test/ } lines($out);
    like($o // '', qr{^log-opt\@test 200 to=<sip:nobody\@127\.0\.0\.1:$port>;tag=\w+ allow=\S*INVITE\S*}i,
         '%{To}o is the To of our 200 (with its tag), %{Allow}o its Allow');
    like($i // '', qr{^log-inv\@test 486 to=<sip:ring\@127\.0\.0\.1:$port>;tag=\w+ allow=- }, "the script's 486: its To, no Allow (-)");
}

# %T (seconds taken) and %u (no user: "-"); sip_common from conf/sip.conf
{
    my @r = $t->transact('udp', method => 'INVITE', uri => "sip:slow\@127.0.0.1:$port", call_id => 'log-slow@test',
                         sock => $t->udp_socket, timeout => 5);
    is(@r && $r[-1]->code, 486, 'slow script answered 486');
    my $full = $t->dir . '/logs/sip_full.log';
    my $common = $t->dir . '/logs/sip_common.log';
    ok(wait_until(3, sub { grep { /slow\@/ } lines($full) }), 'issue format log written');
    my ($slow) = grep { /slow\@/ } lines($full);
    my ($fast) = grep { /OPTIONS sip:nobody/ } lines($full);
    like($slow // '', qr{^127\.0\.0\.1 <sip:[^>]+>;tag=\w+ <sip:slow\@127\.0\.0\.1:$port> \[[^\]]+\] "INVITE sip:slow\@127\.0\.0\.1:$port SIP/2\.0" 486 [12] -$},
         '%h %{From}i %{To}i %t "%r" %>s %T %u: the 1.3 s script shows %T = 1 (2 on a loaded machine), no user "-"');
    like($fast // '', qr{" 200 0 -$}, '... and the OPTIONS took 0 s');
    ok(wait_until(3, sub { grep { /slow\@/ } lines($common) }), 'sip_common log written');
    my ($c) = grep { /slow\@/ } lines($common);
    like($c // '', qr{^127\.0\.0\.1 <sip:[^>]+>;tag=\w+ <sip:slow\@127\.0\.0\.1:$port> \[[^\]]+\] "INVITE sip:slow\@127\.0\.0\.1:$port SIP/2\.0" 486$},
         'sip_common (seed 002 §7.5): host From To date request status');
}

ok(!$t->crash_lines, 'engine did not crash while logging');
$t->stop;
done_testing;

#!/usr/bin/perl
# Registrations and flows across engines (issue 19 point 1, SipEngines 2;
# docs/architecture.md "Several engines"):
#   - REGISTERs from many UDP source ports (the kernel spreads them over
#     both engines), then INVITEs from many other ports all reach the UAs;
#     both engines took messages, and REGISTERs were handed over;
#   - users registered over TCP (one homed at each engine) are reached from
#     calls landing on both engines, on their connection; once it closes,
#     every engine answers 480 at once;
#   - digest-authenticated REGISTERs: challenge and answer from different
#     ports (so engines), 200;
#   - kill -9 of the engine that holds no TCP connection: its successor has
#     every binding, and every flow (SYNC), calls still route;
#   - httpd graceful restart with the journal keeps every binding.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::INET;
use SipTest qw(parse_msg rand_token free_port wait_until response_to);
use SipRegTest;
use SipDigest qw(digest_challenge digest_credentials write_htdigest);

my $MODDIR = '/usr/lib/apache2/modules';
my $realm = 'sip.test';
my $t = SipRegTest->new(
    server_conf => join("\n",
        'SipEngines 2',
        "LoadModule status_module $MODDIR/mod_status.so",
        "LoadModule authn_core_module $MODDIR/mod_authn_core.so",
        "LoadModule authn_file_module $MODDIR/mod_authn_file.so",
        '<Location /server-status>', '    SetHandler server-status', '</Location>',
        '<Location "/sec@127.0.0.1">',
        '    SipAuth On',
        "    AuthName \"$realm\"",
        '    AuthUserFile @DIR@/users.htdigest',
        '</Location>', ''),
    setup => sub { write_htdigest($_[0]->dir . '/users.htdigest', $realm, sec => 'secret') },
);
my $port = $t->sip_port;
my @pids = $t->engine_pids;
is(scalar(grep { $_ } @pids), 2, 'two engines run');

# An INVITE to $user from a new UDP port; the UA ($ua: a UDP socket or a
# TCP connection) answers 486 if the INVITE reaches it.  Returns (reached,
# the caller's final status, seconds to it).
sub call {
    my ($user, $ua) = @_;
    my $u = $t->udp_socket;
    my $raw = $t->sip_request(method => 'INVITE', uri => "sip:$user\@127.0.0.1:$port", sock => $u,
                              call_id => rand_token(12) . '@eng');
    my $t0 = time;
    $t->udp_send($raw, sock => $u);
    my $reached = 0;
    if ($ua && $ua->isa('IO::Socket::INET') && $ua->socktype == SOCK_DGRAM) {
        my $inv = $t->udp_new_request($ua, 3, 'INVITE');
        if ($inv) {
            $reached = 1;
            $t->udp_send(response_to(parse_msg($inv), 486, 'Busy Here', tag => 'ua'), sock => $ua,
                         port => $port);
        }
    }
    elsif ($ua) {
        my $end = time + 3;
        while ((my $left = $end - time) > 0) {
            my $m = $t->read_response($ua, $left) or last;
            next if $m->is_response || $m->method ne 'INVITE';
            $reached = 1;
            $t->send_raw($ua, response_to($m, 486, 'Busy Here', tag => 'ua'));
            last;
        }
    }
    my $fin = $t->udp_final($u, 5);
    if ($fin && $fin->code >= 300) {
        my $ack = $t->ack_for($raw, $fin);
        $t->udp_send($ack, sock => $u) if $ack;
    }
    return ($reached, $fin ? $fin->code : 0, time - $t0);
}

# ---- 1. UDP: REGISTERs from many ports, INVITEs from many others
my $c0 = $t->sip_counters;
my (%ua, $regs_ok);
for my $i (1 .. 16) {
    my $user = "u$i";
    my $s = $t->udp_socket;
    my $r = $t->register(user => $user, sock => $s, expires => 600,
                         contacts => [ '<sip:' . $user . '@127.0.0.1:' . $s->sockport . '>' ]);
    $regs_ok++ if $r && $r->code == 200;
    $ua{$user} = $s;
}
is($regs_ok, 16, '16 REGISTERs from 16 UDP ports: 200 each');
my $reached = 0;
for my $user (sort keys %ua) {
    my ($ok, $code) = call($user, $ua{$user});
    $reached++ if $ok && $code == 486;
}
is($reached, 16, 'INVITEs from 16 other UDP ports reach every registered UA (its 486 comes back)');
my $c1 = $t->sip_counters;
ok(($c1->{SipEngine0MessagesIn} // 0) > ($c0->{SipEngine0MessagesIn} // 0)
   && ($c1->{SipEngine1MessagesIn} // 0) > ($c0->{SipEngine1MessagesIn} // 0),
   'both engines took messages');
ok(($c1->{SipHandoverSent} // 0) > ($c0->{SipHandoverSent} // 0), 'REGISTERs and replicas were handed over');

# ---- 2. TCP: one user homed at each engine, reached from both engines
my $nobody = free_port();
my (%tcp, %tcp_home);
for my $n (0 .. 40) {
    my $user = "t$n";
    my $h = SipRegTest::engine_home("sip:$user\@127.0.0.1");
    next if exists $tcp_home{$h};
    $tcp_home{$h} = $user;
}
for my $h (0, 1) {
    my $user = $tcp_home{$h};
    my $c = $t->tcp_connect or die "connect: $!";
    my $r = $t->register(user => $user, transport => 'tcp', sock => $c, expires => 600,
                         contacts => [ "<sip:$user\@127.0.0.1:$nobody;transport=tcp;ob>" ]);
    is($r && $r->code, 200, "$user (homed at engine $h) REGISTERs over TCP: 200 on its connection");
    $tcp{$user} = $c;
}
for my $h (0, 1) {
    my $user = $tcp_home{$h};
    my $n = 0;
    for (1 .. 10) {
        my ($ok, $code) = call($user, $tcp{$user});
        $n++ if $ok && $code == 486;
    }
    is($n, 10, "10 INVITEs from 10 UDP ports reach $user on its TCP connection");
}

# ---- 3. digest auth: the challenge and the answer from different ports
my $auth_ok = 0;
for my $i (1 .. 6) {
    my $cid = rand_token(12) . '@auth';
    my $r = $t->register(user => 'sec', call_id => $cid, cseq => 2 * $i - 1, expires => 600,
                         contacts => [ '<sip:sec@127.0.0.1:5999>' ]);
    my $ch = $r && $r->code == 401 ? digest_challenge($r, 'www-authenticate') : undef;
    next unless $ch;
    $r = $t->register(user => 'sec', call_id => $cid, cseq => 2 * $i, expires => 600,
                      contacts => [ '<sip:sec@127.0.0.1:5999>' ],
                      headers => [ Authorization => digest_credentials(
                          challenge => $ch, user => 'sec', password => 'secret', method => 'REGISTER',
                          uri => "sip:127.0.0.1:$port") ]);
    $auth_ok++ if $r && $r->code == 200;
}
is($auth_ok, 6, 'six digest REGISTERs, each 401 then 200 from another port');

# ---- 4. kill -9 the engine holding no TCP connection
# which engine holds the TCP connections: the owner of their socket inode
sub holder_of {
    my ($c) = @_;
    my $lport = $c->sockport;
    open(my $fh, '<', '/proc/net/tcp') or return undef;
    my $inode;
    while (<$fh>) {
        my @f = split;
        next unless $f[1] && $f[2];
        my ($lp) = $f[1] =~ /:([0-9A-F]+)$/ or next;
        my ($rp) = $f[2] =~ /:([0-9A-F]+)$/ or next;
        $inode = $f[9] if hex($lp) == $port && hex($rp) == $lport;
    }
    close $fh;
    return undef unless $inode;
    my @p = $t->engine_pids;
    for my $e (0 .. $#p) {
        next unless $p[$e];
        opendir(my $d, "/proc/$p[$e]/fd") or next;
        for (readdir $d) {
            my $l = readlink("/proc/$p[$e]/fd/$_") // next;
            return $e if $l eq "socket:[$inode]";
        }
    }
    return undef;
}
my $holder = holder_of($tcp{ $tcp_home{0} });
ok(defined $holder, 'the engine holding the TCP connections is found') or diag('holder unknown');
$holder //= 0;
my $victim = 1 - $holder;
@pids = $t->engine_pids;
kill 'KILL', $pids[$victim];
ok(wait_until(15, sub { my @p = $t->engine_pids; $p[$victim] && $p[$victim] != $pids[$victim] }),
   "engine $victim killed (-9) and restarted");
sleep 1;    # its SYNC answered
$reached = 0;
for my $user (sort keys %ua) {
    my ($ok, $code) = call($user, $ua{$user});
    $reached++ if $ok && $code == 486;
}
is($reached, 16, 'after the restart every UDP user is still reached from new ports');
for my $h (0, 1) {
    my $user = $tcp_home{$h};
    my $n = 0;
    for (1 .. 10) {
        my ($ok, $code) = call($user, $tcp{$user});
        $n++ if $ok && $code == 486;
    }
    is($n, 10, "after the restart $user (homed at engine $h) is still reached on its TCP flow");
}

# ---- 5. a closed flow: 480 at once from every engine
my $gone = $tcp_home{0};
close $tcp{$gone};
sleep 0.5;
my ($n480, $slow) = (0, 0);
for (1 .. 10) {
    my ($ok, $code, $dt) = call($gone, undef);
    $n480++ if $code == 480;
    $slow++ if $dt > 1;
}
is($n480, 10, "after $gone\'s connection closed, 10 INVITEs from 10 ports: 480 each");
is($slow, 0, '... each within a second (no timeout on a dead flow)');

# ---- 6. graceful restart: the journal keeps every binding
$t->apachectl('graceful');
ok(wait_until(20, sub { my @p = $t->engine_pids; scalar(grep { $_ } @p) == 2
                        && !grep { $_ && $_ == $pids[$holder] } @p }),
   'graceful restart: two new engines');
sleep 1;
$reached = 0;
for my $user (sort keys %ua) {
    my ($ok, $code) = call($user, $ua{$user});
    $reached++ if $ok && $code == 486;
}
is($reached, 16, 'after a graceful restart every UDP user is still reached');

$t->dump_log_on_failure;
done_testing;

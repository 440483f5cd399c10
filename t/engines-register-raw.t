#!/usr/bin/perl
# Several engines (SipEngines 2): a UDP REGISTER landing on the engine that
# is not its AoR's home is handed over before any parse
# (sip_msg_scan_register_aor); the home parses it.  From many source ports
# (the kernel spreads them over both engines), for users homed at each:
#   - well-formed REGISTERs get their 200 and the binding is seen from
#     every port (both engines);
#   - malformed ones (a To the scan reads, a broken CSeq or Via) get 400
#     from wherever they land: the home answers what it was handed unparsed;
#   - a To the scan leaves to the parser (quoted display name, escapes)
#     still gets 200 and lands at its home.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time);
use SipTest qw(parse_msg rand_token);
use SipRegTest;

my $t = SipRegTest->new(server_conf => "SipEngines 2\n");
my $port = $t->sip_port;
is(scalar(grep { $_ } $t->engine_pids), 2, 'two engines run');

sub register_raw {
    my (%o) = @_;
    my $u = $o{sock};
    my $lp = $u->sockport;
    my $cseq = $o{cseq} // "1 REGISTER";
    my $via = $o{via} // "SIP/2.0/UDP 127.0.0.1:$lp;branch=z9hG4bK" . rand_token(10);
    my $raw = "REGISTER sip:127.0.0.1:$port SIP/2.0\r\n"
            . "Via: $via\r\n"
            . "From: <sip:$o{user}\@127.0.0.1>;tag=" . rand_token(6) . "\r\n"
            . "To: $o{to}\r\n"
            . "Call-ID: " . rand_token(12) . "\@raw\r\n"
            . "CSeq: $cseq\r\n"
            . "Contact: <sip:$o{user}\@127.0.0.1:$lp>\r\n"
            . "Max-Forwards: 70\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n";
    $t->udp_send($raw, sock => $u);
    return $t->udp_final($u);
}

my @socks = map { $t->udp_socket } 1 .. 12;
my (@users, %homes);
for my $i (1 .. 40) {
    my $user = "raw$i";
    my $h = SipRegTest::engine_home("sip:$user\@127.0.0.1");
    next if ($homes{$h} // 0) >= 6;
    $homes{$h}++;
    push @users, $user;
}
is(scalar(@users), 12, 'six users homed at each engine');

my ($ok, $bad, $parsed) = (0, 0, 0);
for my $i (0 .. $#users) {
    my $user = $users[$i];
    # every user from two ports, so from both engines most likely
    for my $u ($socks[$i], $socks[($i + 5) % @socks]) {
        my $r = register_raw(sock => $u, user => $user, to => "<sip:$user\@127.0.0.1:$port>");
        $ok++ if $r && $r->code == 200;
        $r = register_raw(sock => $u, user => $user, to => "<sip:$user\@127.0.0.1>",
                          cseq => 'x REGISTER');
        $bad++ if $r && $r->code == 400;
        $r = register_raw(sock => $u, user => $user, to => "<sip:$user\@127.0.0.1>",
                          via => 'SIP/2.0/UDP');
        $bad++ if $r && $r->code == 400;
        $r = register_raw(sock => $u, user => $user, to => "\"R $i\" <sip:$user\@127.0.0.1>");
        $parsed++ if $r && $r->code == 200;
    }
}
is($ok, 2 * @users, 'every well-formed REGISTER got 200, from every port');
is($bad, 4 * @users, 'every malformed REGISTER got 400 (a broken CSeq, a Via without host)');
is($parsed, 2 * @users, 'a To the scan leaves to the parser: 200 as well');

# the bindings are the home's, and every engine has them (replicas)
my $seen = 0;
for my $i (0 .. $#users) {
    for my $u (@socks[0 .. 3]) {
        my $r = register_raw(sock => $u, user => $users[$i], to => "<sip:$users[$i]\@127.0.0.1>",
                             cseq => '9 REGISTER');
        # a fetch has no Contact of its own here: it re-sends one, so use the
        # answer's Contact list: one binding per port it registered from
        $seen++ if $r && $r->code == 200 && scalar($r->headers('contact')) >= 2;
    }
}
is($seen, 4 * @users, 'each AoR shows the bindings made from both of its ports, from every port');

$t->stop;
done_testing;

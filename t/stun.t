#!/usr/bin/perl
# STUN keep-alives on the UDP SIP ports (RFC 5626 §4.4.2 and §8, RFC 5389),
# with a STUN client written here (the RFC 5769 vectors are in the unit
# tests):
#   - a Binding request is answered on the same port with a Binding success
#     response: same transaction id, XOR-MAPPED-ADDRESS = the client's
#     address and port as seen by the server (IPv4, and IPv6 on [::1]);
#     FINGERPRINT (valid, last) only when the request had one;
#   - two client sockets each get their own mapped port;
#   - an unknown comprehension-required attribute gets 420 naming it;
#   - indications, responses, other methods, a wrong FINGERPRINT, a wrong
#     magic cookie, a truncated header get nothing, each with a debug line;
#   - SIP on the same socket, before and after, is served as ever;
#   - mod_status: SipStunBindings and SipStunDropped count exactly these.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use IO::Socket::IP;
use IO::Select;
use Socket qw(inet_ntop AF_INET6);
use Compress::Zlib ();
use SipTest qw(parse_msg rand_token free_port wait_until);

my $MAGIC = 0x2112A442;
my $port6 = free_port();
my $t = SipTest->new(server_conf => <<"EOC");
LoadModule status_module $SipTest::MODDIR/mod_status.so
<Location /server-status>
    SetHandler server-status
</Location>
Listen [::1]:$port6
<VirtualHost [::1]:$port6>
    ServerName localhost6
    ProtocolSip On
</VirtualHost>
EOC
my $port = $t->sip_port;

sub stats {
    my $body = $t->http_get("/server-status?auto");
    my %s = ($body // '') =~ /^(Sip\w+): (\d+)$/mg;
    return \%s;
}

sub txid { join '', map { chr int rand 256 } 1 .. 12 }

# A STUN message: type, transaction id, attributes ([type, value], ...);
# fingerprint => 1 appends a FINGERPRINT over it (RFC 5389 §15.5).
sub stun_msg {
    my ($type, $tid, $attrs, %o) = @_;
    my $body = '';
    for my $a (@{ $attrs // [] }) {
        my ($at, $v) = @$a;
        $body .= pack('nn', $at, length $v) . $v . ("\0" x ((4 - length($v) % 4) % 4));
    }
    my $len = length($body) + ($o{fingerprint} ? 8 : 0);
    my $m = pack('nnN', $type, $len, $o{cookie} // $MAGIC) . $tid . $body;
    if ($o{fingerprint}) {
        my $crc = Compress::Zlib::crc32($m) ^ 0x5354554e;
        $crc ^= 1 if $o{bad_fingerprint};
        $m .= pack('nnN', 0x8028, 4, $crc);
    }
    return $m;
}

# Parse a STUN message: { type, tid, attrs => [[type, value], ...] } or undef.
sub stun_parse {
    my ($d) = @_;
    return undef unless defined $d && length $d >= 20;
    my ($type, $len, $cookie) = unpack('nnN', $d);
    return undef unless $cookie == $MAGIC && $len == length($d) - 20;
    my $m = { type => $type, tid => substr($d, 8, 12), attrs => [], raw => $d };
    my $off = 20;
    while ($off + 4 <= length $d) {
        my ($at, $al) = unpack('nn', substr($d, $off, 4));
        push @{ $m->{attrs} }, [ $at, substr($d, $off + 4, $al), $off ];
        $off += 4 + $al + (4 - $al % 4) % 4;
    }
    return undef unless $off == length $d;
    return $m;
}

sub attr { my ($m, $type) = @_; my ($a) = grep { $_->[0] == $type } @{ $m->{attrs} }; $a }

# XOR-MAPPED-ADDRESS as "ip port" (RFC 5389 §15.2)
sub xor_mapped {
    my ($m) = @_;
    my $a = attr($m, 0x0020) or return undef;
    my ($fam, $xport) = unpack('xCn', $a->[1]);
    my $port = $xport ^ ($MAGIC >> 16);
    my $key = pack('N', $MAGIC) . $m->{tid};
    if ($fam == 1 && length $a->[1] == 8) {
        my $ip = substr($a->[1], 4, 4) ^ substr($key, 0, 4);
        return join('.', unpack('C4', $ip)) . " $port";
    }
    if ($fam == 2 && length $a->[1] == 20) {
        return inet_ntop(AF_INET6, substr($a->[1], 4, 16) ^ $key) . " $port";
    }
    return "family $fam";
}

# Send one datagram from $s to ($host, $p); the first datagram back within
# $timeout seconds, or undef.
sub exchange {
    my ($s, $data, $timeout, $host, $p) = @_;
    $host //= '127.0.0.1';
    $p //= $port;
    my $dst = IO::Socket::IP->new(PeerHost => $host, PeerPort => $p, Proto => 'udp')->peername;
    send($s, $data, 0, $dst) or die "send: $!";
    return undef unless IO::Select->new($s)->can_read($timeout // 2);
    recv($s, my $buf, 65536, 0);
    return $buf;
}

my $s0 = stats();
ok(defined $s0->{SipStunBindings} && defined $s0->{SipStunDropped},
   'mod_status shows SipStunBindings and SipStunDropped') or diag(explain($s0));

my $u = IO::Socket::INET->new(LocalAddr => '127.0.0.1', Proto => 'udp') or die $!;
my $u2 = IO::Socket::INET->new(LocalAddr => '127.0.0.1', Proto => 'udp') or die $!;

# ---- SIP on the socket first
my @r = $t->udp_req($t->sip_request(uri => "sip:nobody\@127.0.0.1:$port", sock => $u), 3, sock => $u);
is(@r ? $r[-1]->code : 0, 200, 'OPTIONS over UDP answered before any STUN');

# ---- a bare Binding request (RFC 5626 §8: no attribute needed)
my $tid = txid();
my $resp = stun_parse(exchange($u, stun_msg(0x0001, $tid)));
ok($resp, 'a Binding request is answered with a STUN message');
is($resp && sprintf('0x%04x', $resp->{type}), '0x0101', 'a Binding success response');
ok($resp && $resp->{tid} eq $tid, 'with the request\'s transaction id');
is($resp && xor_mapped($resp), '127.0.0.1 ' . $u->sockport,
   'XOR-MAPPED-ADDRESS is the client\'s address and port');
ok($resp && !attr($resp, 0x8028), 'no FINGERPRINT when the request had none');

# ---- another client socket: its own port
$resp = stun_parse(exchange($u2, stun_msg(0x0001, txid())));
is($resp && xor_mapped($resp), '127.0.0.1 ' . $u2->sockport, 'a second client gets its own port');

# ---- with FINGERPRINT and a comprehension-optional SOFTWARE
$tid = txid();
$resp = stun_parse(exchange($u, stun_msg(0x0001, $tid, [[0x8022, 'stun.t client']], fingerprint => 1)));
is($resp && $resp->{type}, 0x0101, 'a Binding request with SOFTWARE and FINGERPRINT is answered');
my $fp = $resp && attr($resp, 0x8028);
ok($fp, 'the answer carries a FINGERPRINT');
ok($fp && $fp->[2] == length($resp->{raw}) - 8, 'FINGERPRINT is the last attribute');
ok($fp && unpack('N', $fp->[1]) == ((Compress::Zlib::crc32(substr($resp->{raw}, 0, $fp->[2])) ^ 0x5354554e) & 0xffffffff),
   'FINGERPRINT is the CRC-32 of the answer xor 0x5354554e');
is($resp && xor_mapped($resp), '127.0.0.1 ' . $u->sockport, 'and the mapped address');

# ---- an unknown comprehension-required attribute (RFC 3489's CHANGE-REQUEST): 420
$tid = txid();
$resp = stun_parse(exchange($u, stun_msg(0x0001, $tid, [[0x0003, pack('N', 6)]])));
is($resp && sprintf('0x%04x', $resp->{type}), '0x0111', 'CHANGE-REQUEST: a Binding error response');
my $ec = $resp && attr($resp, 0x0009);
ok($ec && (unpack('xxCC', $ec->[1]))[0] == 4 && (unpack('xxCC', $ec->[1]))[1] == 20,
   'ERROR-CODE 420');
my $ua = $resp && attr($resp, 0x000A);
is($ua && unpack('n', $ua->[1]), 3, 'UNKNOWN-ATTRIBUTES names 0x0003');

# ---- IPv6
SKIP: {
    my $u6 = IO::Socket::IP->new(LocalHost => '::1', Proto => 'udp', Family => AF_INET6);
    skip 'no IPv6 loopback', 2 unless $u6;
    $tid = txid();
    $resp = stun_parse(exchange($u6, stun_msg(0x0001, $tid), 3, '::1', $port6));
    is($resp && $resp->{type}, 0x0101, 'IPv6: a Binding request on [::1] is answered');
    is($resp && xor_mapped($resp), '::1 ' . $u6->sockport, 'IPv6: XOR-MAPPED-ADDRESS is [::1] and the port');
}

# ---- things that get no answer
my $mark = $t->log_mark;
my %drop = (
    'a Binding indication'   => [ stun_msg(0x0011, txid()), 'STUN indication' ],
    'a Binding response'     => [ stun_msg(0x0101, txid()), 'STUN response' ],
    'an Allocate request'    => [ stun_msg(0x0003, txid()), 'STUN request of another method' ],
    'a wrong FINGERPRINT'    => [ stun_msg(0x0001, txid(), [], fingerprint => 1, bad_fingerprint => 1),
                                  'bad STUN FINGERPRINT' ],
    'no magic cookie (RFC 3489)' => [ stun_msg(0x0001, txid(), [], cookie => 0x01020304),
                                      'malformed STUN header' ],
    'a truncated header'     => [ substr(stun_msg(0x0001, txid()), 0, 12), 'malformed STUN header' ],
    'a length past the end'  => [ pack('nnN', 1, 8, $MAGIC) . txid(), 'malformed STUN header' ],
);
for my $what (sort keys %drop) {
    my $got = exchange($u, $drop{$what}[0], 0.5);
    ok(!defined $got, "$what gets no answer");
}
for my $what (sort keys %drop) {
    my $why = $drop{$what}[1];
    ok($t->wait_log($mark, qr/dropped \Q$why\E from 127\.0\.0\.1:\d+/), "debug line for $what: $why");
}

# ---- SIP still served on the same socket
@r = $t->udp_req($t->sip_request(uri => "sip:nobody\@127.0.0.1:$port", sock => $u), 3, sock => $u);
is(@r ? $r[-1]->code : 0, 200, 'OPTIONS over UDP answered after the STUN traffic');

# ---- counters: 6 answered (2 bare, SOFTWARE+FINGERPRINT, 420, IPv6 or not), 7 dropped
my $want_bindings = 4 + (IO::Socket::IP->new(LocalHost => '::1', Proto => 'udp', Family => AF_INET6) ? 1 : 0);
my $s1 = {};
wait_until(5, sub { $s1 = stats(); ($s1->{SipStunDropped} // 0) - $s0->{SipStunDropped} >= 7 }, 0.1);
is(($s1->{SipStunBindings} // 0) - $s0->{SipStunBindings}, $want_bindings,
   "SipStunBindings counted the $want_bindings answered requests");
is(($s1->{SipStunDropped} // 0) - $s0->{SipStunDropped}, 7, 'SipStunDropped counted the 7 dropped ones');
is(($s1->{SipBadMessages} // 0) - ($s0->{SipBadMessages} // 0), 0, 'none of them counted as a bad SIP message');

$t->dump_log_on_failure;
$t->stop;
done_testing();

#!/usr/bin/perl
# What the stateful proxy changes on the way (RFC 3261 §16.6, §16.7): raw
# UDP/TCP sockets play caller (UAC) and callee (UAS) around mod_sip with
# SipProxyOutside On, and compare the bytes that arrive with the bytes
# sent.  Only the Request-URI, our Via, Max-Forwards, our Route entry and
# Record-Route may differ on a request; only our Via on a response.
# Credentials for our realm (AuthName) are consumed (§22.3), others pass.
# Record-Route carries the transport (;transport=tcp) and two values when
# the transport changes (RFC 5658), so the callee's BYE goes back over the
# transport the caller used; a spiral adds no second identical value.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);
use SipTest qw(parse_msg free_port accept_on);
use SipRegTest;
use Digest::SHA qw(hmac_sha1_hex);

my $MODDIR = '/usr/lib/apache2/modules';
my $REALM = 'wire.realm';

my $t = SipRegTest->new(
    server_conf => join("\n",
        "LoadModule authn_core_module $MODDIR/mod_authn_core.so",
        '<Location "/">',
        "    AuthName \"$REALM\"",
        '</Location>', ''),
    vhost_conf => "SipProxyOutside On");
my $port = $t->sip_port;

# ---- helpers

sub udp_request_on { $t->udp_new_request(@_) }

# Responses on UDP socket $s until one with code $code (raw text).
sub udp_response_on {
    my ($s, $code, $timeout) = @_;
    my $end = time + ($timeout // 3);
    while ((my $left = $end - time) > 0) {
        my $d = $t->udp_recv($s, $left) // return undef;
        return $d if $d =~ m{^SIP/2\.0 $code };
    }
    return undef;
}

# One framed message from a TCP socket, raw.
sub tcp_msg {
    my ($s, $timeout) = @_;
    my $m = $t->read_response($s, $timeout // 3);
    return $m ? $m->raw : undef;
}

sub tcp_listener {
    my $p = shift // free_port();
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $p, Proto => 'tcp',
                                  Listen => 5, ReuseAddr => 1) or die "listen: $!";
    return $l;
}

# Split a raw message into (start line, [header lines as written], body).
sub lines_of {
    my $raw = shift // '';
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    my @l = split /\r\n(?![ \t])/, $head;
    my $start = shift @l;
    return ($start, \@l, $body // '');
}

sub rr_re {
    my ($tr, $ftag) = @_;
    return qr/<sip:127\.0\.0\.1:$port\Q$tr\E;lr;ftag=\Q$ftag\E;rs=[0-9a-f]{16}>/;
}

sub crlf { my $s = shift; $s =~ s/\r?\n/\r\n/g; return $s }

my $sdp = crlf("v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 9 RTP/AVP 0\n");

# ---- 1. UDP call: request and responses byte for byte

my $uac = $t->udp_socket;
my $uas = $t->udp_socket;
my ($uac_port, $uas_port) = ($uac->sockport, $uas->sockport);
{
    my $cid = "wire-1-$$\@127.0.0.1";
    my $rest = crlf(<<"EOT");
From: "Alice" <sip:alice\@127.0.0.1>;tag=wire1
To: <sip:bob\@127.0.0.1>
Call-ID: $cid
CSeq: 1 INVITE
Contact: <sip:alice\@127.0.0.1:$uac_port>
User-agent: WireTest/1.0
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY, MESSAGE
X-odd-Case:   spaced   value  
Subject: folded
 over two lines
Proxy-Authorization: Digest username="alice", realm="elsewhere.example", nonce="def", uri="sip:bob\@127.0.0.1", response="fedcba9876543210fedcba9876543210"
Content-Type: application/sdp
Content-Length:   @{[ length $sdp ]}
EOT
    my $ours_auth = qq{Authorization: Digest username="alice", realm="$REALM", nonce="abc", }
                  . qq{uri="sip:bob\@127.0.0.1", response="0123456789abcdef0123456789abcdef"\r\n};
    my $ours_pauth = qq{Proxy-Authorization: Digest realm=$REALM, username="alice", nonce="x"\r\n};
    my $uac_via = "SIP/2.0/UDP 127.0.0.1:$uac_port;branch=z9hG4bK-w1;rport";
    my $inv = "INVITE sip:bob\@127.0.0.1:$uas_port SIP/2.0\r\n"
            . "Via: $uac_via\r\n"
            . "Max-forwards: 10\r\n"
            . "Route: <sip:127.0.0.1:$port;lr>,  <sip:127.0.0.1:$uas_port;lr>\r\n"
            . $ours_auth
            . $rest =~ s/^(Subject:)/$ours_pauth$1/mr
            . "\r\n" . $sdp;
    $t->udp_send($inv, sock => $uac);
    my $got = udp_request_on($uas, 3, 'INVITE');
    ok($got, 'UDP: the INVITE reached the UAS') or BAIL_OUT('proxy does not forward');
    my ($start, $h, $body) = lines_of($got);
    is($start, "INVITE sip:bob\@127.0.0.1:$uas_port SIP/2.0", 'Request-URI kept (loose route)');
    like($h->[0], qr{^Via: SIP/2\.0/UDP 127\.0\.0\.1:$port;branch=z9hG4bKmS[0-9a-f]+\.\d+;rport$},
         'our Via first');
    is($h->[1], "Via: SIP/2.0/UDP 127.0.0.1:$uac_port;branch=z9hG4bK-w1;rport=$uac_port;received=127.0.0.1",
       "the caller's Via as sent, with rport filled in and received added");
    like($h->[2], qr/^Record-Route: ${\ rr_re('', 'wire1')}$/, 'our Record-Route (UDP: no transport), signed with the From tag');
    is($h->[3], 'Max-forwards: 9', 'Max-Forwards decremented in place, its spelling kept');
    is($h->[4], "Route: <sip:127.0.0.1:$uas_port;lr>", 'a multi-value Route header lost only our value');
    my $after = join('', map { "$_\r\n" } @{$h}[5 .. $#$h]) . "\r\n" . $body;
    is($after, $rest . "\r\n" . $sdp,
       'every other header byte for byte in its order and spelling (Allow one header, folding, '
       . 'padded Content-Length), the body untouched');
    ok($got !~ /realm="?\Q$REALM\E/, 'Authorization and Proxy-Authorization for our realm removed');
    like($got, qr/^Proxy-Authorization: Digest username="alice", realm="elsewhere\.example"/m,
         'Proxy-Authorization for another realm kept');

    # the UAS answers with its own spelling; the Vias folded into one line
    my $m = parse_msg($got);
    my @vias = $m->header_elems('via');
    my $rr = $m->header('record-route');
    my $resp_rest = crlf(<<"EOT");
Record-Route: $rr
from: "Alice" <sip:alice\@127.0.0.1>;tag=wire1
TO: <sip:bob\@127.0.0.1>;tag=uas1
Call-ID: $cid
CSeq: 1 INVITE
Contact: <sip:bob\@127.0.0.1:$uas_port>
Allow: INVITE, ACK, BYE
Server: WireUAS/2
x-lower-case: v
Content-Type: application/sdp
Content-Length:  @{[ length $sdp ]}
EOT
    my $via_line = 'Via: ' . join(' ,  ', @vias) . "\r\n";
    $t->udp_send("SIP/2.0 180 Ringing\r\n$via_line" . $resp_rest =~ s/Content-Length:  \d+/Content-Length: 0/r
                 . "\r\n", sock => $uas, port => $port);
    $t->udp_send("SIP/2.0 200 OK\r\n$via_line$resp_rest\r\n$sdp", sock => $uas, port => $port);
    my $r180 = udp_response_on($uac, 180);
    my $r200 = udp_response_on($uac, 200);
    my $want_rest = "Via: $vias[1]\r\n";
    is($r200, "SIP/2.0 200 OK\r\n$want_rest$resp_rest\r\n$sdp",
       '200 relayed byte for byte; only our Via value left the folded Via line');
    is($r180, "SIP/2.0 180 Ringing\r\n$want_rest" . $resp_rest =~ s/Content-Length:  \d+/Content-Length: 0/r . "\r\n",
       '180 relayed byte for byte');

    # ACK and BYE from the caller follow the route set (reversed RR)
    my $ack = "ACK sip:bob\@127.0.0.1:$uas_port SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:$uac_port;branch=z9hG4bK-w1a\r\n"
            . "Route: $rr\r\nMax-Forwards: 70\r\nFrom: <sip:alice\@127.0.0.1>;tag=wire1\r\n"
            . "To: <sip:bob\@127.0.0.1>;tag=uas1\r\nCall-ID: $cid\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n";
    $t->udp_send($ack, sock => $uac);
    my $gack = udp_request_on($uas, 3, 'ACK');
    ok($gack && $gack !~ /^Route:/mi, 'the ACK reached the UAS, our Route entry consumed');

    # the callee hangs up: its BYE goes back to the caller's Contact
    my $bye = "BYE sip:alice\@127.0.0.1:$uac_port SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:$uas_port;branch=z9hG4bK-w1b\r\n"
            . "Route: $rr\r\nMax-Forwards: 70\r\nFrom: <sip:bob\@127.0.0.1>;tag=uas1\r\n"
            . "To: \"Alice\" <sip:alice\@127.0.0.1>;tag=wire1\r\nCall-ID: $cid\r\nCSeq: 7 BYE\r\nl: 0\r\n\r\n";
    $t->udp_send($bye, sock => $uas, port => $port);
    my $gbye = udp_request_on($uac, 3, 'BYE');
    ok($gbye, "the callee's BYE reached the caller");
    my ($bs, $bh) = lines_of($gbye);
    is(join("\r\n", @{$bh}[1 .. $#$bh]),
       "Via: SIP/2.0/UDP 127.0.0.1:$uas_port;branch=z9hG4bK-w1b\r\nMax-Forwards: 69\r\n"
       . "From: <sip:bob\@127.0.0.1>;tag=uas1\r\nTo: \"Alice\" <sip:alice\@127.0.0.1>;tag=wire1\r\n"
       . "Call-ID: $cid\r\nCSeq: 7 BYE\r\nl: 0",
       'BYE at the caller: our Via on top, Route gone, no Record-Route (in dialog), compact l: kept') or diag($gbye);
    my $bm = parse_msg($gbye);
    my $ok = "SIP/2.0 200 OK\r\nVia: " . join(', ', $bm->header_elems('via')) . "\r\nFrom: <sip:bob\@127.0.0.1>;tag=uas1\r\n"
           . "To: \"Alice\" <sip:alice\@127.0.0.1>;tag=wire1\r\nCall-ID: $cid\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n";
    $t->udp_send($ok, sock => $uac);
    my $gok = udp_response_on($uas, 200);
    is($gok, "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:$uas_port;branch=z9hG4bK-w1b\r\n"
             . "From: <sip:bob\@127.0.0.1>;tag=uas1\r\nTo: \"Alice\" <sip:alice\@127.0.0.1>;tag=wire1\r\n"
             . "Call-ID: $cid\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n",
       'the 200 for the BYE reached the callee with only our Via removed (folded Via line split back)');
}

# ---- 2. a final non-2xx is stored, then relayed byte for byte (§16.7)
{
    my $cid = "wire-2-$$\@127.0.0.1";
    my $inv = "INVITE sip:bob\@127.0.0.1:$uas_port SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:$uac_port;branch=z9hG4bK-w2\r\n"
            . "Max-Forwards: 70\r\nFrom: <sip:alice\@127.0.0.1>;tag=wire2\r\nTo: <sip:bob\@127.0.0.1>\r\n"
            . "Call-ID: $cid\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    $t->udp_send($inv, sock => $uac);
    my $got = udp_request_on($uas, 3, 'INVITE');
    ok($got, 'second INVITE forwarded');
    my @vias = parse_msg($got)->header_elems('via');
    my $rest = "from: <sip:alice\@127.0.0.1>;tag=wire2\r\nTo: <sip:bob\@127.0.0.1>;tag=busy\r\nCall-ID: $cid\r\n"
             . "CSeq: 1 INVITE\r\nWarning: 399 uas \"busy, really\"\r\nRetry-after: 30\r\nContent-Length: 0\r\n\r\n";
    $t->udp_send("SIP/2.0 486 Busy Here\r\nVia: $vias[0]\r\nv: $vias[1]\r\n$rest", sock => $uas, port => $port);
    my $r = udp_response_on($uac, 486);
    is($r, "SIP/2.0 486 Busy Here\r\nv: $vias[1]\r\n$rest", '486 relayed byte for byte, our Via removed');
}

# ---- 3. TCP on both sides: ;transport=tcp recorded, the callee's BYE over TCP
my %d3;
{
    my $cid = "wire-3-$$\@127.0.0.1";
    my $uas_l = tcp_listener();
    my $uas_tp = $uas_l->sockport;
    my $uac_l = tcp_listener();                 # the caller's Contact (TCP)
    my $uac_cp = $uac_l->sockport;
    my $uac_udp = $t->udp_socket(port => $uac_cp);  # nothing must arrive here
    my $c = $t->tcp_connect or die "connect: $!";
    my $inv = "INVITE sip:bob\@127.0.0.1:$uas_tp;transport=tcp SIP/2.0\r\n"
            . "Via: SIP/2.0/TCP 127.0.0.1:$uac_cp;branch=z9hG4bK-w3\r\nMax-Forwards: 70\r\n"
            . "From: <sip:alice\@127.0.0.1>;tag=wire3\r\nTo: <sip:bob\@127.0.0.1>\r\nCall-ID: $cid\r\n"
            . "CSeq: 1 INVITE\r\nContact: <sip:alice\@127.0.0.1:$uac_cp>\r\nContent-Length: 0\r\n\r\n";
    $t->send_raw($c, $inv);
    my $sc = accept_on($uas_l, 3);
    ok($sc, 'TCP: the proxy connected to the UAS');
    my $got = $sc ? tcp_msg($sc) : undef;
    my $m = parse_msg($got);
    my @rr = $m ? $m->headers('record-route') : ();
    ok(@rr == 1 && $rr[0] =~ /^${\ rr_re(';transport=tcp', 'wire3')}$/,
       'TCP: one Record-Route, with ;transport=tcp') or diag($got);
    my @vias = $m ? $m->header_elems('via') : ();
    $t->send_raw($sc, "SIP/2.0 200 OK\r\nVia: " . join(', ', @vias) . "\r\nRecord-Route: $rr[0]\r\n"
                 . "From: <sip:alice\@127.0.0.1>;tag=wire3\r\nTo: <sip:bob\@127.0.0.1>;tag=uas3\r\n"
                 . "Call-ID: $cid\r\nCSeq: 1 INVITE\r\nContact: <sip:bob\@127.0.0.1:$uas_tp;transport=tcp>\r\n"
                 . "Content-Length: 0\r\n\r\n") if $sc;
    my @r = $t->read_until_final($c, 3);
    ok(@r && $r[-1]->code == 200, 'TCP: the caller got the 200');
    # the callee's BYE (to a Contact without a transport parameter) must
    # go over TCP, as the dialog started (issue: it went over UDP)
    $t->send_raw($sc, "BYE sip:alice\@127.0.0.1:$uac_cp SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:$uas_tp;branch=z9hG4bK-w3b\r\n"
                 . "Route: $rr[0]\r\nMax-Forwards: 70\r\nFrom: <sip:bob\@127.0.0.1>;tag=uas3\r\n"
                 . "To: <sip:alice\@127.0.0.1>;tag=wire3\r\nCall-ID: $cid\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n") if $sc;
    my $bc = accept_on($uac_l, 3);
    my $bye = $bc ? tcp_msg($bc) : undef;
    ok($bye && $bye =~ /^BYE /, "TCP: the callee's BYE reached the caller's Contact over TCP") or diag($bye // 'none');
    like($bye // '', qr{^Via: SIP/2\.0/TCP 127\.0\.0\.1:$port;branch=}m, 'TCP: the BYE carries our TCP Via');
    is($t->udp_recv($uac_udp, 0.3), undef, 'TCP: nothing came over UDP');
    close $_ for grep { $_ } $c, $sc, $bc;
    %d3 = (cid => $cid, rr => $rr[0], uac_l => $uac_l, uac_cp => $uac_cp, uac_udp => $uac_udp);
}

# ---- 4. UDP caller, TCP callee: two Record-Route values (RFC 5658)
{
    my $cid = "wire-4-$$\@127.0.0.1";
    my $uas_l = tcp_listener();
    my $uas_tp = $uas_l->sockport;
    my $inv = "INVITE sip:bob\@127.0.0.1:$uas_tp;transport=tcp SIP/2.0\r\n"
            . "Via: SIP/2.0/UDP 127.0.0.1:$uac_port;branch=z9hG4bK-w4\r\nMax-Forwards: 70\r\n"
            . "From: <sip:alice\@127.0.0.1>;tag=wire4\r\nTo: <sip:bob\@127.0.0.1>\r\nCall-ID: $cid\r\n"
            . "CSeq: 1 INVITE\r\nContact: <sip:alice\@127.0.0.1:$uac_port>\r\nContent-Length: 0\r\n\r\n";
    $t->udp_send($inv, sock => $uac);
    my $sc = accept_on($uas_l, 3);
    my $got = $sc ? tcp_msg($sc) : undef;
    my $m = parse_msg($got);
    my @rr = $m ? $m->headers('record-route') : ();
    ok(@rr == 2 && $rr[0] =~ /^${\ rr_re(';transport=tcp', 'wire4')}$/ && $rr[1] =~ /^${\ rr_re('', 'wire4')}$/,
       'UDP->TCP: two Record-Route values, the TCP one (callee side) on top') or diag($got);
    my @vias = $m ? $m->header_elems('via') : ();
    $t->send_raw($sc, "SIP/2.0 200 OK\r\nVia: " . join(', ', @vias) . "\r\nRecord-Route: $rr[0], $rr[1]\r\n"
                 . "From: <sip:alice\@127.0.0.1>;tag=wire4\r\nTo: <sip:bob\@127.0.0.1>;tag=uas4\r\n"
                 . "Call-ID: $cid\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n") if $sc;
    my $r200 = udp_response_on($uac, 200);
    like($r200 // '', qr/^Record-Route: \Q$rr[0], $rr[1]\E\r$/m, 'UDP->TCP: the caller sees both values');
    # caller's ACK: Route in reverse order, both entries ours
    $t->udp_send("ACK sip:bob\@127.0.0.1:$uas_tp;transport=tcp SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:$uac_port;branch=z9hG4bK-w4a\r\n"
                 . "Route: $rr[1], $rr[0]\r\nMax-Forwards: 70\r\nFrom: <sip:alice\@127.0.0.1>;tag=wire4\r\n"
                 . "To: <sip:bob\@127.0.0.1>;tag=uas4\r\nCall-ID: $cid\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
                 sock => $uac);
    my $ack = $sc ? tcp_msg($sc) : undef;
    ok($ack && $ack =~ /^ACK / && $ack !~ /^Route:/mi, 'UDP->TCP: the ACK reached the callee over TCP, both our entries consumed')
        or diag($ack // 'none');
    # the callee's BYE over TCP comes back to the caller over UDP
    $t->send_raw($sc, "BYE sip:alice\@127.0.0.1:$uac_port SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:$uas_tp;branch=z9hG4bK-w4b\r\n"
                 . "Route: $rr[0], $rr[1]\r\nMax-Forwards: 70\r\nFrom: <sip:bob\@127.0.0.1>;tag=uas4\r\n"
                 . "To: <sip:alice\@127.0.0.1>;tag=wire4\r\nCall-ID: $cid\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n") if $sc;
    my $bye = udp_request_on($uac, 3, 'BYE');
    ok($bye, "UDP->TCP: the callee's BYE came back to the caller over UDP") or diag('no BYE');
    like($bye // '', qr{^Via: SIP/2\.0/UDP 127\.0\.0\.1:$port;branch=}m, 'UDP->TCP: with our UDP Via');
    ok(($bye // '') !~ /^Route:/mi, 'UDP->TCP: both our Route entries consumed');
    close $sc if $sc;
}

# ---- 5. a spiral (the registrar sends the request back to us): one
# Record-Route value of ours, not two identical ones
{
    my $u = 'spiral' . $$;
    my $r1 = $t->register(user => $u, contacts => ["<sip:wire$$\@127.0.0.1:$port>"], expires => 300);
    my $r2 = $t->register(user => "wire$$", contacts => ["<sip:bob\@127.0.0.1:$uas_port>"], expires => 300);
    ok($r1 && $r1->code == 200 && $r2 && $r2->code == 200, 'spiral: two bindings registered');
    my $cid = "wire-5-$$\@127.0.0.1";
    $t->udp_send("INVITE sip:$u\@127.0.0.1:$port SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:$uac_port;branch=z9hG4bK-w5\r\n"
                 . "Max-Forwards: 70\r\nFrom: <sip:alice\@127.0.0.1>;tag=wire5\r\nTo: <sip:$u\@127.0.0.1>\r\n"
                 . "Call-ID: $cid\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n", sock => $uac);
    my $got = udp_request_on($uas, 3, 'INVITE');
    my $m = parse_msg($got);
    my @vias = $m ? $m->header_elems('via') : ();
    my @ours = grep { m{^SIP/2\.0/UDP 127\.0\.0\.1:$port;} } @vias;
    is(scalar(@ours), 2, 'spiral: the request passed through us twice (two Vias of ours)') or diag($got // 'none');
    my @rr = $m ? $m->headers('record-route') : ();
    ok(@rr == 1 && $rr[0] =~ /^${\ rr_re('', 'wire5')}$/, 'spiral: exactly one Record-Route value of ours')
        or diag(join "\n", @rr);
    is($m && $m->header('max-forwards'), '68', 'spiral: Max-Forwards decremented on each pass');
}

# ---- 7. unusual datagrams going on over TCP: compact headers, no
# Content-Length (the body is the rest of the datagram: a stream needs the
# length, so it is added), octets after Content-Length (not forwarded)
{
    my $uas_l = tcp_listener();
    my $uas_tp = $uas_l->sockport;
    my $body = "hello\r\nworld\r\n";
    my $head = "MESSAGE sip:bob\@127.0.0.1:$uas_tp;transport=tcp SIP/2.0\r\n"
             . "v: SIP/2.0/UDP 127.0.0.1:$uac_port;branch=z9hG4bK-w7\r\nMax-Forwards: 70\r\n"
             . "f: <sip:alice\@127.0.0.1>;tag=wire7\r\nt: <sip:bob\@127.0.0.1>\r\ni: wire-7-$$\r\n"
             . "CSeq: 1 MESSAGE\r\nc: text/plain\r\n";
    $t->udp_send("$head\r\n$body", sock => $uac);
    my $sc = accept_on($uas_l, 3);
    my $got = $sc ? tcp_msg($sc) : undef;
    my ($st, $h, $b) = lines_of($got);
    is_deeply([ grep { !/^Record-Route:/ } @{$h // []}[1 .. $#{$h // []}] ],
              [ "v: SIP/2.0/UDP 127.0.0.1:$uac_port;branch=z9hG4bK-w7", 'Max-Forwards: 69',
                'f: <sip:alice@127.0.0.1>;tag=wire7', 't: <sip:bob@127.0.0.1>', "i: wire-7-$$",
                'CSeq: 1 MESSAGE', 'c: text/plain', 'Content-Length: ' . length($body) ],
              'no Content-Length: compact headers kept, Content-Length added for the stream')
        or diag($got // 'none');
    is($b, $body, '... and the whole body forwarded');
    my @v = $got ? parse_msg($got)->header_elems('via') : ();
    $t->send_raw($sc, "SIP/2.0 202 Accepted\r\nv: " . join(',', @v) . "\r\nf: <sip:alice\@127.0.0.1>;tag=wire7\r\n"
                 . "t: <sip:bob\@127.0.0.1>;tag=u7\r\ni: wire-7-$$\r\nCSeq: 1 MESSAGE\r\nl: 0\r\n\r\n") if $sc;
    is(udp_response_on($uac, 202), "SIP/2.0 202 Accepted\r\nv: $v[1]\r\nf: <sip:alice\@127.0.0.1>;tag=wire7\r\n"
                                    . "t: <sip:bob\@127.0.0.1>;tag=u7\r\ni: wire-7-$$\r\nCSeq: 1 MESSAGE\r\nl: 0\r\n\r\n",
       'a compact v: line holding both Vias loses only ours');

    $head =~ s/wire-7-/wire-7b-/;
    $head =~ s/z9hG4bK-w7/z9hG4bK-w7b/;
    $t->udp_send($head . "Content-Length: 5\r\n\r\nhello TRAILING JUNK", sock => $uac);
    my $sc2 = accept_on($uas_l, 1) // $sc;     # the proxy may reuse its connection
    my $got2 = $sc2 ? tcp_msg($sc2) : undef;
    ok($got2 && $got2 =~ /\r\nContent-Length: 5\r\n\r\nhello\z/, 'octets after Content-Length are not forwarded')
        or diag($got2 // 'none');
    if ($sc2 && $got2 && $sc2 != $sc) { close $sc2 }
    close $sc if $sc;
}

# ---- 6. the dialog of 3 survives a graceful restart and an engine crash:
# the route secret is kept by the httpd parent, so our Record-Route still
# verifies and its ;transport=tcp still takes the next BYE over TCP
SKIP: {
    skip 'no TCP dialog from section 3', 3 unless $d3{rr};
    my $engine = $t->engine_pid;
    ok($t->apachectl('graceful'), 'apache2 -k graceful');
    sleep 1;
    kill 'KILL', $t->engine_pid // $engine;
    ok(SipTest::wait_until(5, sub { my $p = $t->engine_pid; $p && $p != $engine && $t->options_ok('udp') }, 0.2),
       'a new engine answers after graceful and kill -9');
    my $c = $t->tcp_connect or die "connect: $!";
    $t->send_raw($c, "BYE sip:alice\@127.0.0.1:$d3{uac_cp} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-w6b\r\n"
                 . "Route: $d3{rr}\r\nMax-Forwards: 70\r\nFrom: <sip:bob\@127.0.0.1>;tag=uas3\r\n"
                 . "To: <sip:alice\@127.0.0.1>;tag=wire3\r\nCall-ID: $d3{cid}\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n");
    my $bc = accept_on($d3{uac_l}, 3);
    my $bye = $bc ? tcp_msg($bc) : undef;
    ok($bye && $bye =~ /^BYE / && !defined $t->udp_recv($d3{uac_udp}, 0.3),
       'after the restarts the recorded route still verifies: the BYE went over TCP, not UDP') or diag($bye // 'none');
    close $_ for grep { $_ } $c, $bc;
}

ok($t->options_ok('udp'), 'server still answers');
is(scalar($t->crash_lines), 0, 'no crash in the error log');
$t->dump_log_on_failure;
$t->stop;

# ---- 8. SipRouteSecret: rs is HMAC-SHA1 over Call-ID, ftag, host:port and
# transport with the configured key; a Route entry made with the key
# verifies (its ;transport=tcp takes the BYE over TCP), one made with
# another key does not (the BYE goes by the Request-URI: UDP)
{
    my $secret = 'wire-test-secret-0123456789';
    my $t2 = SipRegTest->new(vhost_conf => "SipProxyOutside On", server_conf => "SipRouteSecret $secret");
    my $p2 = $t2->sip_port;
    my $rs = sub { my ($key, $cid, $ftag, $tr) = @_;
                   substr(hmac_sha1_hex("$cid\n$ftag\n127.0.0.1:$p2\n$tr", $key), 0, 16) };
    my $uas_l = tcp_listener();
    my $uas_tp = $uas_l->sockport;
    my $u = $t2->udp_socket;
    my $cid = "wire-8-$$\@127.0.0.1";
    $t2->udp_send("INVITE sip:bob\@127.0.0.1:$uas_tp;transport=tcp SIP/2.0\r\n"
                  . "Via: SIP/2.0/UDP 127.0.0.1:" . $u->sockport . ";branch=z9hG4bK-w8\r\nMax-Forwards: 70\r\n"
                  . "From: <sip:alice\@127.0.0.1>;tag=wire8\r\nTo: <sip:bob\@127.0.0.1>\r\nCall-ID: $cid\r\n"
                  . "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n", sock => $u);
    my $sc = accept_on($uas_l, 3);
    my $m = $sc ? parse_msg(tcp_msg($sc)) : undef;
    my @rr = $m ? $m->headers('record-route') : ();
    is_deeply(\@rr, [ "<sip:127.0.0.1:$p2;transport=tcp;lr;ftag=wire8;rs=" . $rs->($secret, $cid, 'wire8', 'tcp') . '>',
                      "<sip:127.0.0.1:$p2;lr;ftag=wire8;rs=" . $rs->($secret, $cid, 'wire8', 'udp') . '>' ],
              'SipRouteSecret: rs = HMAC-SHA1(secret, Call-ID, ftag, host:port, transport), 64 bits');
    close $sc if $sc;

    my $uac_l = tcp_listener();
    my $uac_cp = $uac_l->sockport;
    my $uac_udp = $t2->udp_socket(port => $uac_cp);
    for my $case ([ $secret, 'TCP', 'made with the configured secret' ],
                  [ 'some-other-secret-0123456789', 'UDP', 'made with another secret' ]) {
        my ($key, $want, $what) = @$case;
        my $cid2 = "wire-8b-$key-$$";
        my $route = "<sip:127.0.0.1:$p2;transport=tcp;lr;ftag=ft8;rs=" . $rs->($key, $cid2, 'ft8', 'tcp') . '>';
        my $c = $t2->tcp_connect or die "connect: $!";
        $t2->send_raw($c, "BYE sip:alice\@127.0.0.1:$uac_cp SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-w8$want\r\n"
                      . "Route: $route\r\nMax-Forwards: 70\r\nFrom: <sip:bob\@127.0.0.1>;tag=tt8\r\n"
                      . "To: <sip:alice\@127.0.0.1>;tag=ft8\r\nCall-ID: $cid2\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n");
        my $got;
        if ($want eq 'TCP') {
            my $bc = accept_on($uac_l, 3);
            $got = $bc ? tcp_msg($bc) : undef;
            close $bc if $bc;
        } else {
            $got = udp_request_on($uac_udp, 3, 'BYE');
        }
        ok($got && $got =~ /^BYE /, "a Route entry $what: the BYE went over $want") or diag($got // 'none');
        close $c;
    }
    is(scalar($t2->crash_lines), 0, 'no crash in the error log (SipRouteSecret)');
    $t2->dump_log_on_failure;
    $t2->stop;
}

# SipRouteSecret is one key for the whole server, and not a short one
for my $bad ([ vhost_conf => 'SipRouteSecret wire-test-secret-0123456789', qr/not inside <VirtualHost>/ ],
             [ server_conf => 'SipRouteSecret short', qr/at least 16 characters/ ]) {
    my $c = SipTest->new(start => 0, $bad->[0] => $bad->[1]);
    $c->write_conf;
    my ($rc, $out) = $c->_run_apache('-t');
    $c->cleanup_dir;
    isnt($rc, 0, "'$bad->[1]' ($bad->[0]) refused by apache2 -t");
    like($out, $bad->[2], '... with a message saying why');
}
done_testing;

#!/usr/bin/perl
# Built-in OPTIONS handling with an empty SipDirectory, header mirroring,
# rport, 404 for other methods, HTTP still served.
use strict;
use warnings;
use Test::More;
use SipTest qw(parse_msg);

my $t = SipTest->new(scripts => {});
my $port = $t->sip_port;

# ---- OPTIONS over UDP; Via names a port we do not listen on, so the answer
#      can only reach us through rport.
{
    my $s = $t->udp_socket;
    my $dummy = SipTest::free_port();
    my $req = $t->sip_request(method => 'OPTIONS', uri => "sip:nobody\@127.0.0.1:$port",
                              via_port => $dummy, sock => $s);
    my @r = $t->udp_req($req, 3, sock => $s);
    is(scalar(@r), 1, 'UDP OPTIONS: exactly one response, sent to the source port (rport)');
    my $m = $r[-1];
    is($m && $m->code, 200, 'UDP OPTIONS without any script -> 200');
    if ($m) {
        my @allow = map { uc } $m->header_elems('allow');
        ok((grep { $_ eq 'INVITE' } @allow), 'Allow contains INVITE') or diag("Allow: @allow");
        ok((grep { $_ eq 'OPTIONS' } @allow), 'Allow contains OPTIONS');
        ok(defined $m->header('accept'), 'Accept header present');
        $t->check_mirrored($req, $m, 'UDP OPTIONS', src_port => $s->sockport);
        like($m->header('via'), qr/;\s*received=127\.0\.0\.1/, 'Via has received=127.0.0.1');
        like($m->header('via'), qr/;\s*rport=${\ $s->sockport}\b/, 'Via has rport=<our port>');
    }
    # the same request again: same To tag is not required (new transaction?
    # no: same branch => retransmission) -> identical final response
    my @r2 = $t->udp_req($req, 3, sock => $s);
    is(scalar(@r2), 1, 'retransmitted OPTIONS answered once');
    is($r2[0] && $r2[0]->to_tag, $m && $m->to_tag, 'retransmission answered with the same To tag');
}

# ---- an escaped NUL in To cannot be copied faithfully: refused with 400
{
    my $s = $t->udp_socket;
    my $req = $t->sip_request(method => 'OPTIONS', sock => $s, uri => "sip:nobody\@127.0.0.1:$port",
                              to => "<sip:x%00y\@127.0.0.1:$port>");
    my @r = $t->udp_req($req, 3, sock => $s);
    is(@r && $r[-1]->code, 400, 'To with an escaped NUL -> 400');
}

# ---- From / To with display names, parameters and escapes are copied as sent
#      (To only gets ";tag=..." appended)
{
    my @cases = (
        [ from => '"Alice \\"A\\" Smith" <sip:alice@127.0.0.1;transport=udp>;tag=abc;x-p=1' ],
        [ from => 'Alice <sip:alice@127.0.0.1>;tag=a1b2' ],
        [ to   => "Bob <sip:b%20ob\@127.0.0.1:$port>;x-q=2" ],
        [ to   => "<sip:UPPER\@127.0.0.1:$port;Transport=UDP>" ],
        [ to   => "\"Quoted, with comma\" <sip:q\@127.0.0.1:$port>" ],
    );
    for my $c (@cases) {
        my ($h, $v) = @$c;
        my $s = $t->udp_socket;
        my $req = $t->sip_request(method => 'OPTIONS', sock => $s, uri => "sip:nobody\@127.0.0.1:$port", $h => $v);
        my @r = $t->udp_req($req, 3, sock => $s);
        my $got = @r ? $r[-1]->header($h) : undef;
        if ($h eq 'from') {
            is($got, $v, "From copied exactly: $v");
        } else {
            like($got // '', qr/^\Q$v\E;tag=[^;\s]+$/, "To copied exactly plus tag: $v")
                or diag("got: " . ($got // 'no response'));
        }
    }
}

# ---- OPTIONS with a request URI without user part
{
    my @r = $t->transact('udp', method => 'OPTIONS', uri => "sip:127.0.0.1:$port", sock => $t->udp_socket);
    is(@r && $r[-1]->code, 200, 'UDP OPTIONS to sip:127.0.0.1 -> 200');
}

# ---- OPTIONS over TCP
{
    my $c = $t->tcp_connect;
    ok($c, 'TCP connect to SIP port');
    my $req = $t->sip_request(method => 'OPTIONS', transport => 'TCP', sock => $c,
                              uri => "sip:nobody\@127.0.0.1:$port");
    $t->send_raw($c, $req);
    my $m = $t->read_response($c, 3);
    is($m && $m->code, 200, 'TCP OPTIONS without any script -> 200');
    if ($m) {
        my @allow = map { uc } $m->header_elems('allow');
        ok((grep { $_ eq 'INVITE' } @allow) && (grep { $_ eq 'OPTIONS' } @allow),
           'TCP: Allow contains INVITE and OPTIONS') or diag("Allow: @allow");
        ok(defined $m->header('accept'), 'TCP: Accept header present');
        $t->check_mirrored($req, $m, 'TCP OPTIONS', src_port => $c->sockport);
    }
    # connection stays open for a second request
    my $req2 = $t->sip_request(method => 'OPTIONS', transport => 'TCP', sock => $c, cseq => 2);
    $t->send_raw($c, $req2);
    my $m2 = $t->read_response($c, 3);
    is($m2 && $m2->code, 200, 'TCP: second OPTIONS on the same connection -> 200');
    is($m2 && $m2->header('cseq'), '2 OPTIONS', 'TCP: second answer is for the second request');
}

# ---- Other methods without script -> 404
for my $tr (qw(udp tcp)) {
    my $s = $tr eq 'udp' ? $t->udp_socket : $t->tcp_connect;
    my $req = $t->sip_request(method => 'MESSAGE', transport => uc $tr, sock => $s,
                              uri => "sip:nobody\@127.0.0.1:$port",
                              content_type => 'text/plain', body => 'hello');
    my @r = $tr eq 'udp' ? $t->udp_req($req, 3, sock => $s) : $t->tcp_request($req, 3, sock => $s);
    is(@r && $r[-1]->code, 404, "$tr: MESSAGE with no script -> 404");
    ok(!(grep { $_->code == 100 } @r), "$tr: no 100 Trying for a non-INVITE");
    $t->check_mirrored($req, $r[-1], "$tr MESSAGE 404", src_port => $s->sockport) if @r;
}
{
    my $s = $t->udp_socket;
    my $req = $t->sip_request(method => 'INVITE', sock => $s, uri => "sip:nobody\@127.0.0.1:$port");
    my @r = $t->udp_req($req, 3, sock => $s);
    is(@r && $r[-1]->code, 404, 'udp: INVITE with no script -> 404');
    $t->udp_send($t->ack_for($req, $r[-1]), sock => $s) if @r;
    $t->check_mirrored($req, $r[-1], 'udp INVITE 404', src_port => $s->sockport) if @r;
}

# ---- HTTP still served on the HTTP port
{
    my $h = $t->http_get('/');
    like($h, qr{^HTTP/1\.1 \d{3} }, 'plain HTTP GET on the HTTP port answered');
}

ok($t->engine_pid, 'engine pid file names a live process');
$t->dump_log_on_failure;
$t->stop;
done_testing;

#!/usr/bin/perl
# TCP framing and connection handling.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use IO::Select;
use SipTest qw(parse_msg wait_until);

my $sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
my $sdplen = length $sdp;

my $t = SipTest->new(
    vhost_conf => 'SipTcpIdleTimeout 5',
    scripts => {
        'echo@127.0.0.1' => "#!/bin/sh\nprintf 'SIP/2.0 200 OK\\r\\nContent-Type: application/octet-stream\\r\\n\\r\\n'\nexec /bin/cat\n",
        'ring@127.0.0.1' => "#!/bin/sh\nprintf 'SIP/2.0 180 Ringing\\n\\n'\n/bin/sleep 0.3\n"
            . "printf 'SIP/2.0 200 OK\\nContent-Type: application/sdp\\nContact: <sip:ring\@127.0.0.1:\@SIPPORT\@;transport=tcp>\\nContent-Length: $sdplen\\n\\n'\n"
            . "printf '%s' '$sdp'\n",
    });
my $port = $t->sip_port;
my $engine = $t->engine_pid;
sub uri { "sip:$_[0]\@127.0.0.1:$port" }

# ---- pipelining: 3 requests in one write
{
    my $c = $t->tcp_connect;
    my @req = map { $t->sip_request(method => 'OPTIONS', transport => 'TCP', sock => $c,
                                    uri => uri('nobody'), cseq => $_) } 1 .. 3;
    $t->send_raw($c, join '', @req);
    my @r = map { $t->read_response($c, 3) } 1 .. 3;
    is(scalar(grep { defined } @r), 3, 'pipelined: 3 responses');
    is_deeply([ map { $_ ? $_->header('call-id') : undef } @r ],
              [ map { parse_msg($_)->header('call-id') } @req ], 'pipelined: responses in request order');
    is_deeply([ map { $_ ? $_->code : 0 } @r ], [200, 200, 200], 'pipelined: all 200');
}

# ---- one request byte by byte
{
    my $c = $t->tcp_connect;
    setsockopt($c, IPPROTO_TCP, TCP_NODELAY, 1);
    my $req = $t->sip_request(method => 'OPTIONS', transport => 'TCP', sock => $c, uri => uri('nobody'));
    for my $i (0 .. length($req) - 1) {
        $t->send_raw($c, substr($req, $i, 1));
        sleep 0.003;
    }
    my $m = $t->read_response($c, 3);
    is($m && $m->code, 200, 'request sent one byte per write is answered');
    is($m && $m->header('call-id'), parse_msg($req)->header('call-id'), '... with the right Call-ID');
}

# ---- body split across writes
{
    my $c = $t->tcp_connect;
    setsockopt($c, IPPROTO_TCP, TCP_NODELAY, 1);
    my $body = join '', map { sprintf "line %04d of the body\r\n", $_ } 1 .. 60;
    my $req = $t->sip_request(method => 'MESSAGE', transport => 'TCP', sock => $c, uri => uri('echo'),
                              content_type => 'text/plain', body => $body);
    my $hl = index($req, "\r\n\r\n") + 4;
    $t->send_raw($c, substr($req, 0, $hl - 1));             # header minus the final LF
    sleep 0.3;
    $t->send_raw($c, substr($req, $hl - 1, 11));
    sleep 0.3;
    $t->send_raw($c, substr($req, $hl + 10, 500));
    sleep 0.3;
    $t->send_raw($c, substr($req, $hl + 510));
    my $m = $t->read_response($c, 5);
    is($m && $m->code, 200, 'body split across writes: answered');
    is($m && $m->body, $body, 'body split across writes: script saw the whole body');
}

# ---- script responses come back on the same connection
{
    my $c = $t->tcp_connect;
    my $inv = $t->sip_request(method => 'INVITE', transport => 'TCP', sock => $c, uri => uri('ring'),
                              content_type => 'application/sdp', body => $sdp);
    $t->send_raw($c, $inv);
    my @r = $t->read_until_final($c, 5);
    my @codes = grep { $_ != 100 } map { $_->code } @r;
    is_deeply(\@codes, [180, 200], 'INVITE over TCP: 180 and 200 on the same connection') or diag("got @codes");
    is(@r && $r[-1]->body, $sdp, 'INVITE over TCP: SDP body of the 200 intact');
    if (@r && $r[-1]->code == 200) {
        $t->send_raw($c, $t->ack_for($inv, $r[-1], new_branch => 1));
        my $extra = $t->read_response($c, 1.5);
        ok(!$extra, 'no answer to the ACK, no 200 retransmission over TCP')
            or diag($extra->raw);
    }
}

# ---- CRLF keep-alive (RFC 5626 4.4.1)
{
    my $c = $t->tcp_connect;
    $t->send_raw($c, "\r\n\r\n");
    my $pong = $t->read_raw($c, 2, 2);
    is($pong, "\r\n", 'CRLFCRLF ping answered with CRLF pong');
    my $more = $t->read_raw($c, 1, 0.5);
    is($more, '', 'exactly one CRLF pong');
    my $req = $t->sip_request(method => 'OPTIONS', transport => 'TCP', sock => $c, uri => uri('nobody'));
    $t->send_raw($c, $req);
    my $m = $t->read_response($c, 3);
    is($m && $m->code, 200, 'connection usable after the keep-alive ping');
}

# ---- half a message, then the client goes away
{
    my $c = $t->tcp_connect;
    my $req = $t->sip_request(method => 'OPTIONS', transport => 'TCP', sock => $c, uri => uri('nobody'));
    $t->send_raw($c, substr($req, 0, 40));
    close $c;
    ok($t->options_ok('tcp'), 'server fine after a client closed mid-message');
}

# An OPTIONS on each connection; the indexes of those not answered with
# their own 200 within 'secs' in all.
sub options_on_each {
    my ($c, $tag, $secs) = @_;
    my (@cid, @bad);
    for my $i (0 .. $#$c) {
        my $req = $t->sip_request(method => 'OPTIONS', transport => 'TCP', sock => $c->[$i],
                                  uri => uri('nobody'), call_id => "$tag-$i-" . SipTest::rand_token(6));
        $cid[$i] = parse_msg($req)->header('call-id');
        $t->send_raw($c->[$i], $req);
    }
    my $end = time + $secs;
    for my $i (0 .. $#$c) {
        my $m = $t->read_response($c->[$i], $end - time > 0 ? $end - time : 0.01);
        push @bad, $i unless $m && $m->code == 200 && $m->header('call-id') eq $cid[$i];
    }
    return @bad;
}

# ---- a burst of connections while the engine is busy: each is handed to
#      it through a datagram queue, which once held about 100 hand-offs;
#      the rest were closed at once ("cannot hand the SIP connection")
{
    my @eng = $t->engine_pids;
    @eng = ($t->engine_pid) unless @eng;
    kill 'STOP', @eng;
    my @c;
    for my $i (1 .. 240) {
        my $c = $t->tcp_connect(timeout => 5, local_addr => $i % 2 ? '127.0.0.1' : '127.0.0.2') or last;
        push @c, $c;
    }
    sleep 0.5;      # the MPM's threads have handed off what they could
    kill 'CONT', @eng;
    is(scalar(@c), 240, '240 TCP connections opened while the engine was stopped');
    my @bad = options_on_each(\@c, 'burst', 20);
    is(scalar(@bad), 0, 'every connection of the burst reached the engine and was answered')
        or diag("unanswered: " . scalar(@bad) . " (first: @bad[0 .. ($#bad < 9 ? $#bad : 9)])");
    unlike($t->error_log, qr/cannot hand the SIP connection/, '... none closed for a full hand-off queue');
    close $_ for @c;
}

# ---- 300 idle connections, then one request on each (from two source
#      addresses: SipTcpMaxConnectionsPerIP is 256 by default)
{
    my @c;
    for my $i (1 .. 300) {
        my $c = $t->tcp_connect(timeout => 5, local_addr => $i % 2 ? '127.0.0.1' : '127.0.0.2') or last;
        push @c, $c;
    }
    is(scalar(@c), 300, '300 TCP connections opened');
    sleep 1;
    my @bad = options_on_each(\@c, 'many', 30);
    is(scalar(@c) - @bad, scalar(@c), 'every one of the 300 connections got its own answer')
        or diag("unanswered connections: " . scalar(@bad) . " (first: @bad[0 .. ($#bad < 9 ? $#bad : 9)])");
    close $_ for @c;
}

is($t->engine_pid, $engine, 'engine not restarted');

# ---- idle connections closed after SipTcpIdleTimeout (5 s): one that was
#      used once, and one on which the client never sent anything
{
    my $used = $t->tcp_connect;
    $t->send_raw($used, $t->sip_request(method => 'OPTIONS', transport => 'TCP', sock => $used,
                                        uri => uri('nobody')));
    my $m = $t->read_response($used, 3);
    is($m && $m->code, 200, 'idle test: first request answered');
    my $silent = $t->tcp_connect;
    my $t0 = time;
    my %closed;
    my $sel = IO::Select->new($used, $silent);
    while (time - $t0 < 9 && $sel->count) {
        for my $s ($sel->can_read(0.2)) {
            my $n = sysread($s, my $buf, 100);
            next if $n;
            $closed{ $s == $used ? 'used' : 'silent' } = time - $t0;
            $sel->remove($s);
        }
    }
    for my $k (qw(used silent)) {
        my $el = $closed{$k};
        ok(defined $el && $el >= 4 && $el <= 8,
           sprintf('idle TCP connection (%s) closed after SipTcpIdleTimeout 5 (%s)', $k,
                   defined $el ? sprintf('%.1f s', $el) : 'still open after 9 s'));
    }
}

$t->dump_log_on_failure;
$t->stop;
done_testing;

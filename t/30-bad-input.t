#!/usr/bin/perl
# Malformed and oversized input over UDP and TCP: right error code (or
# silence when no answer is possible), server alive, engine not restarted.
use strict;
use warnings;
use Test::More;
use SipTest qw(parse_msg);

my $t = SipTest->new(
    scripts    => {},
    vhost_conf => "LimitRequestLine 512\nLimitRequestFieldSize 512\nLimitRequestFields 20",
);
my $port = $t->sip_port;
my $engine = $t->engine_pid;
ok($engine, "engine running (pid " . ($engine // 'none') . ")");

srand(20240501);
my $random = join '', map { chr(int rand 256) } 1 .. 700;
$random =~ s/^\s+//;
$random =~ s/\r\n\r\n//g;
$random .= "\r\n\r\n";    # complete "message" so the server can judge it

my $uri = "sip:nobody\@127.0.0.1:$port";
my $drop_re = qr/drop|discard|ignor|invalid|malformed|bad|unpars|pars(?:e|ing)|garbage/i;

# name, transports, request args (or raw), expected: code list | 'none' | 'none-or-400'
my @cases = (
    [ 'garbage "hello"',      [qw(udp tcp)], { raw => "hello\r\n\r\n" },   'none' ],
    [ 'random bytes',         [qw(udp tcp)], { raw => $random },            'none' ],
    [ 'a response sent to the server', [qw(udp tcp)], { response => 1 },    'none' ],
    [ 'ACK without transaction', [qw(udp tcp)], { method => 'ACK' },       'none' ],
    [ 'SIP/3.0 version',      [qw(udp tcp)], { version => 'SIP/3.0' },      [505] ],
    [ 'missing To',           [qw(udp tcp)], { omit => ['To'] },            [400] ],
    [ 'missing From',         [qw(udp tcp)], { omit => ['From'] },          [400] ],
    [ 'missing Call-ID',      [qw(udp tcp)], { omit => ['Call-ID'] },       [400] ],
    [ 'missing CSeq',         [qw(udp tcp)], { omit => ['CSeq'] },          [400] ],
    [ 'missing Max-Forwards', [qw(udp tcp)], { omit => ['Max-Forwards'] },  [400] ],
    [ 'missing Via',          [qw(udp)],     { omit => ['Via'] },           'none-or-400' ],
    [ 'missing Via',          [qw(tcp)],     { omit => ['Via'] },           [400] ],
    [ 'malformed CSeq "abc"', [qw(udp tcp)], { replace => { CSeq => 'abc' } }, [400] ],
    [ 'CSeq method mismatch', [qw(udp tcp)], { cseq_method => 'INVITE' },   [400] ],
    [ 'negative Content-Length', [qw(udp tcp)], { content_length => '-1' }, [400] ],
    [ 'Content-Length larger than the datagram', [qw(udp)],
      { body => 'abc', content_type => 'text/plain', content_length => 50 }, [400] ],
    [ 'request line over LimitRequestLine', [qw(udp tcp)],
      { uri => 'sip:' . ('a' x 600) . "\@127.0.0.1:$port" }, [414] ],
    [ 'header over LimitRequestFieldSize', [qw(udp tcp)],
      { headers => [ 'X-Long' => 'x' x 600 ] }, [400, 413] ],
    [ 'more than LimitRequestFields headers', [qw(udp tcp)],
      { headers => [ map { ("X-H$_" => "v$_") } 1 .. 25 ] }, [400, 413] ],
    [ 'body over SipLimitRequestBody (65536)', [qw(tcp)],
      { body => 'b' x 70000, content_type => 'text/plain', split_body => 1 }, [413] ],
);

for my $c (@cases) {
    my ($name, $trs, $args, $expect) = @$c;
    for my $tr (@$trs) {
        my $label = "$tr: $name";
        my $mark = $t->log_mark;
        my %a = %$args;
        my $split = delete $a{split_body};
        my $s = $tr eq 'udp' ? $t->udp_socket : $t->tcp_connect;
        my $raw;
        if (exists $a{raw}) {
            $raw = $a{raw};
        } elsif ($a{response}) {
            $raw = $t->sip_request(method => 'OPTIONS', transport => uc $tr, sock => $s, uri => $uri);
            $raw =~ s/^OPTIONS \S+ SIP\/2\.0/SIP\/2.0 200 OK/;
        } else {
            $raw = $t->sip_request(method => 'MESSAGE', uri => $uri, transport => uc $tr, sock => $s, %a);
        }
        my @r;
        if ($tr eq 'udp') {
            $t->udp_send($raw, sock => $s);
            while (defined(my $d = $t->udp_recv($s, @r ? 0.5 : 1.5))) { push @r, parse_msg($d) }
        } else {
            if ($split) {
                my ($head, $body) = split /\r\n\r\n/, $raw, 2;
                $t->send_raw($s, "$head\r\n\r\n");
                my $m = $t->read_response($s, 1.5);
                if ($m) { push @r, $m }
                else { $t->send_raw($s, $body) }
            } else {
                $t->send_raw($s, $raw);
            }
            while (my $m = $t->read_response($s, @r ? 0.5 : 1.5)) { push @r, $m }
        }
        my @codes = map { $_->code } @r;
        if (ref $expect) {
            is(scalar(@r), 1, "$label: one response") or diag("got: @codes");
            my $code = @r ? $r[0]->code : 'none';
            ok((grep { $_ eq $code } @$expect), "$label -> @$expect")
                or diag("got $code" . (@r ? "\n" . $r[0]->raw : ''));
            if (@r && !exists $a{omit} && !$a{version}) {
                # answerable requests: the error response still mirrors the request
                my $req = parse_msg($raw);
                is($r[0]->header('call-id'), $req->header('call-id'), "$label: Call-ID copied");
                like($r[0]->header('to') // '', qr/;\s*tag=/, "$label: To tag added");
            }
        } elsif ($expect eq 'none-or-400') {
            ok(!@r || (@r == 1 && $r[0]->code == 400), "$label -> no response or 400")
                or diag("got: @codes");
        } else {
            ok(!@r, "$label -> no response") or diag("got: @codes\n" . $r[0]->raw);
            if (!exists $a{method} && !exists $a{response}) {
                ok($t->wait_log($mark, $drop_re, 3), "$label: error log mentions the dropped message")
                    or diag("log since case:\n" . $t->log_since($mark));
            }
        }
        ok($t->options_ok('udp'), "$label: server still answers OPTIONS over UDP");
        ok($t->options_ok('tcp'), "$label: server still answers OPTIONS over TCP");
        is($t->engine_pid, $engine, "$label: engine not restarted (no crash)");
    }
}

# a TCP connection that sent garbage must not break other connections, and
# a valid request after a CRLF-only prefix is accepted (RFC 3261 7.5)
{
    my $c = $t->tcp_connect;
    $t->send_raw($c, "\r\n" . $t->sip_request(method => 'OPTIONS', transport => 'TCP', sock => $c, uri => $uri));
    my $m = $t->read_response($c, 3);
    is($m && $m->code, 200, 'tcp: CRLF before the start line is ignored');
}

$t->dump_log_on_failure;
$t->stop;
done_testing;

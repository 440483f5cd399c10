#!/usr/bin/perl
# SIP-CGI environment (RFC 3050 section 6) and script stdin.
use strict;
use warnings;
use Test::More;
use SipTest qw(parse_msg);

my $t = SipTest->new(scripts => {
    'envdump@127.0.0.1' => "#!/bin/sh\n"
        . "printf 'SIP/2.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\n'\n"
        . "echo \"%ARGC=\$#\"\n"
        . "echo \"%CWD=\$(pwd -P)\"\n"
        . "/usr/bin/env | LC_ALL=C /usr/bin/sort\n",
    'echo@127.0.0.1' => "#!/bin/sh\n"
        . "printf 'SIP/2.0 200 OK\\r\\nContent-Type: application/octet-stream\\r\\n\\r\\n'\n"
        . "exec /bin/cat\n",
});
my $port = $t->sip_port;
my $sdir = Cwd::abs_path($t->scripts_dir);

sub parse_env {
    my ($body) = @_;
    my %e;
    my @order;
    for my $l (split /\n/, $body // '') {
        next unless $l =~ /^([%A-Za-z_][A-Za-z0-9_]*)=(.*)$/;
        $e{$1} = $2;
        push @order, $1;
    }
    return \%e;
}

sub send_req {
    my ($tr, %a) = @_;
    my $s = $tr eq 'udp' ? $t->udp_socket : $t->tcp_connect;
    my $req = $t->sip_request(transport => uc $tr, sock => $s, %a);
    my @r = $tr eq 'udp' ? $t->udp_req($req, 5, sock => $s) : $t->tcp_request($req, 5, sock => $s);
    return ($req, $r[-1], $s);
}

for my $tr (qw(udp tcp)) {
    # ---- request without body, repeated custom header, Authorization
    my $uri = "sip:envdump\@127.0.0.1:$port;user=ip";
    my ($raw, $m, $s) = send_req($tr, method => 'MESSAGE', uri => $uri,
        headers => [ 'X-Foo' => 'a', 'Subject' => 'env test', 'X-Foo' => 'b',
                     'Authorization' => 'Digest username="u", realm="r", nonce="n", uri="sip:x", response="0123"' ]);
    my $req = parse_msg($raw);
    is($m && $m->code, 200, "$tr: envdump answers 200");
    $t->check_mirrored($raw, $m, "$tr envdump", src_port => $s->sockport) if $m;
    my $e = parse_env($m && $m->body);
    is($e->{GATEWAY_INTERFACE}, 'SIP-CGI/1.1', "$tr: GATEWAY_INTERFACE");
    is($e->{REQUEST_METHOD}, 'MESSAGE', "$tr: REQUEST_METHOD");
    is($e->{REQUEST_URI}, $uri, "$tr: REQUEST_URI exact");
    is($e->{SERVER_PROTOCOL}, 'SIP/2.0', "$tr: SERVER_PROTOCOL");
    ok(defined $e->{SERVER_SOFTWARE} && length $e->{SERVER_SOFTWARE}, "$tr: SERVER_SOFTWARE non-empty");
    is($e->{SERVER_NAME}, '127.0.0.1', "$tr: SERVER_NAME");
    is($e->{SERVER_PORT}, $port, "$tr: SERVER_PORT");
    is($e->{REMOTE_ADDR}, '127.0.0.1', "$tr: REMOTE_ADDR");
    is($e->{SIP_CALL_ID}, $req->header('call-id'), "$tr: SIP_CALL_ID");
    is($e->{SIP_CSEQ}, '1 MESSAGE', "$tr: SIP_CSEQ");
    is($e->{SIP_FROM}, $req->header('from'), "$tr: SIP_FROM");
    is($e->{SIP_TO}, $req->header('to'), "$tr: SIP_TO");
    my $branch = $req->header_param('via', 'branch');
    like($e->{SIP_VIA} // '', qr{^SIP/2\.0/\U$tr\E 127\.0\.0\.1:\d+;branch=\Q$branch\E}i, "$tr: SIP_VIA is the request's Via");
    is($e->{SIP_MAX_FORWARDS}, '70', "$tr: SIP_MAX_FORWARDS");
    is($e->{SIP_SUBJECT}, 'env test', "$tr: SIP_SUBJECT (generic header)");
    like($e->{SIP_X_FOO} // '', qr/^a, ?b$/, "$tr: repeated X-Foo -> SIP_X_FOO=a, b")
        or diag("SIP_X_FOO=" . ($e->{SIP_X_FOO} // 'undef'));
    ok(!exists $e->{SIP_AUTHORIZATION}, "$tr: Authorization not exported");
    ok(!(grep { /AUTHORIZATION/ && defined $e->{$_} && $e->{$_} =~ /0123/ } keys %$e),
       "$tr: Authorization credentials not exported under any name");
    ok(!exists $e->{CONTENT_LENGTH}, "$tr: no CONTENT_LENGTH without a body");
    ok(!exists $e->{CONTENT_TYPE}, "$tr: no CONTENT_TYPE without a body");
    my @empty = grep { !/^%/ && $e->{$_} eq '' } sort keys %$e;
    ok(!@empty, "$tr: no variable with an empty value") or diag("empty: @empty");
    is($e->{'%ARGC'}, '0', "$tr: script got no arguments");
    is($e->{'%CWD'}, $sdir, "$tr: working directory is SipDirectory");
    diag($m ? $m->body : 'no response') unless Test::More->builder->is_passing;

    # ---- compact header forms
    ($raw, $m, $s) = send_req($tr, method => 'MESSAGE', uri => "sip:envdump\@127.0.0.1:$port", compact => 1);
    $req = parse_msg($raw);
    is($m && $m->code, 200, "$tr: compact-form request answered");
    $e = parse_env($m && $m->body);
    is($e->{SIP_FROM}, $req->header('from'), "$tr: f: -> SIP_FROM");
    is($e->{SIP_TO}, $req->header('to'), "$tr: t: -> SIP_TO");
    is($e->{SIP_CALL_ID}, $req->header('call-id'), "$tr: i: -> SIP_CALL_ID");
    $branch = $req->header_param('via', 'branch');
    like($e->{SIP_VIA} // '', qr/branch=\Q$branch\E/, "$tr: v: -> SIP_VIA");
    ok(!exists $e->{SIP_F} && !exists $e->{SIP_T} && !exists $e->{SIP_I} && !exists $e->{SIP_V},
       "$tr: compact names not exported as SIP_F/SIP_T/SIP_I/SIP_V");
    $t->check_mirrored($raw, $m, "$tr compact", src_port => $s->sockport) if $m;

    # ---- request with a body
    my $sdp = "v=0\r\no=- 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    ($raw, $m, $s) = send_req($tr, method => 'MESSAGE', uri => "sip:envdump\@127.0.0.1:$port",
                              content_type => 'application/sdp', body => $sdp);
    $e = parse_env($m && $m->body);
    is($e->{CONTENT_LENGTH}, length($sdp), "$tr: CONTENT_LENGTH with a body");
    is($e->{CONTENT_TYPE}, 'application/sdp', "$tr: CONTENT_TYPE with a body");

    ($raw, $m, $s) = send_req($tr, method => 'MESSAGE', uri => "sip:echo\@127.0.0.1:$port",
                              content_type => 'application/sdp', body => $sdp);
    is($m && $m->code, 200, "$tr: echo script answers");
    is($m && $m->body, $sdp, "$tr: script stdin holds exactly the request body");

    my $bin = join '', map { chr } (0 .. 255), (0 .. 255);
    ($raw, $m, $s) = send_req($tr, method => 'MESSAGE', uri => "sip:echo\@127.0.0.1:$port",
                              content_type => 'application/octet-stream', body => $bin);
    ok($m && $m->body eq $bin, "$tr: binary body (with NUL bytes) passed through stdin intact");
    is($m && $m->header('content-length'), length($bin), "$tr: Content-Length of the echoed binary body");

    ($raw, $m, $s) = send_req($tr, method => 'MESSAGE', uri => "sip:echo\@127.0.0.1:$port");
    is($m && $m->code, 200, "$tr: echo script without body does not hang (stdin is at EOF)");
    is($m && $m->body, '', "$tr: empty stdin without a body");
}

# ---- stdin/stdout integrity with larger random bodies (pipe buffers, partial writes)
{
    srand(4242);
    my @bad;
    for my $i (1 .. 20) {
        my $tr = $i % 2 ? 'udp' : 'tcp';
        my $len = $tr eq 'udp' ? 1000 + int(rand 30000) : 1000 + int(rand 64000);
        my $body = join '', map { chr(int rand 256) } 1 .. $len;
        my ($raw, $m) = send_req($tr, method => 'MESSAGE', uri => "sip:echo\@127.0.0.1:$port",
                                 content_type => 'application/octet-stream', body => $body);
        push @bad, "$tr/$len: " . ($m ? $m->code . ' body ' . length($m->body) : 'no response')
            unless $m && $m->code == 200 && $m->body eq $body;
    }
    ok(!@bad, 'echo of 20 random bodies (1-65 KB) intact') or diag(join "\n", @bad);
}

$t->dump_log_on_failure;
$t->stop;
done_testing;

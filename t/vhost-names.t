#!/usr/bin/perl
# Name-based SIP virtual hosts: several ProtocolSip vhosts on one
# address:port; the Request-URI host chooses among them by ServerName and
# ServerAlias (wildcards too), as Host does for HTTP.  The first vhost
# defined on the address gets everything else.  Each vhost has its own SipDirectory
# and CustomLog, over UDP and TCP.
use strict;
use warnings;
use Test::More;
use SipTest qw(parse_msg wait_until);

sub answer_script { "#!/bin/sh\nprintf 'SIP/2.0 486 Busy Here\\nX-Vhost: $_[0]\\nX-Server: %s\\n\\n' \"\$SERVER_NAME\"\n" }

my $t = SipTest->new(
    scripts => { 'default.cgi' => answer_script('main') },
    server_conf => join("\n",
        '<VirtualHost 127.0.0.1:@SIPPORT@>',
        '    ServerName a.example',
        '    ServerAlias alias-a.example *.a.example',
        '    ProtocolSip On',
        '    SipDirectory @DIR@/scripts-a',
        '    CustomLog @DIR@/logs/a.log "%{Call-ID}i %>s"',
        '</VirtualHost>',
        '<VirtualHost 127.0.0.1:@SIPPORT@>',
        '    ServerName b.example',
        '    ProtocolSip On',
        '    SipDirectory @DIR@/scripts-b',
        '</VirtualHost>',
        # not a SIP vhost: its name must not steal requests
        '<VirtualHost 127.0.0.1:@SIPPORT@>',
        '    ServerName c.example',
        '</VirtualHost>',
        ''),
    setup => sub {
        my $t = shift;
        for my $v (qw(a b)) {
            my $d = $t->dir . "/scripts-$v";
            mkdir $d or die $!;
            chmod 0755, $d;
            open(my $fh, '>', "$d/default.cgi") or die $!;
            print $fh answer_script($v);
            close $fh;
            chmod 0755, "$d/default.cgi";
        }
        # vhost b proxies fwd@b.example to the port in a file
        my $f = $t->dir . '/scripts-b/fwd@b.example';
        open(my $fh, '>', $f) or die $!;
        print $fh "#!/bin/sh\nprintf 'CGI-PROXY-REQUEST sip:fwd\@127.0.0.1:%s SIP/2.0\\n\\n' \"\$(cat " . $t->var . "/uas-port)\"\n";
        close $fh;
        chmod 0755, $f;
    },
);
my $port = $t->sip_port;

sub vhost_of {
    my ($tr, $host, %o) = @_;
    my @r = $t->transact($tr, method => 'INVITE', uri => "sip:someone\@$host",
                         sock => ($tr eq 'udp' ? $t->udp_socket : undef), %o);
    my ($f) = grep { $_->code >= 200 } @r;
    return $f ? ($f->header('x-vhost') // 'no X-Vhost') . ($f->code == 486 ? '' : ' (' . $f->code . ')')
              : 'no answer';
}

for my $tr (qw(udp tcp)) {
    is(vhost_of($tr, 'a.example'), 'a', "$tr: ServerName a.example -> vhost a");
    is(vhost_of($tr, "A.Example:$port"), 'a', "$tr: host compared case-insensitively, port ignored");
    is(vhost_of($tr, 'alias-a.example'), 'a', "$tr: ServerAlias -> vhost a");
    is(vhost_of($tr, 'pbx.a.example'), 'a', "$tr: wildcard ServerAlias *.a.example -> vhost a");
    is(vhost_of($tr, 'b.example'), 'b', "$tr: ServerName b.example -> vhost b");
    is(vhost_of($tr, "127.0.0.1:$port"), 'main', "$tr: address only -> the first vhost");
    # the first vhost is not responsible for other domains (SipProxyOutside Off)
    is(vhost_of($tr, 'unknown.example'), 'no X-Vhost (404)', "$tr: unknown name -> 404 from the first vhost");
    is(vhost_of($tr, 'c.example'), 'no X-Vhost (404)', "$tr: a non-SIP vhost's name -> 404 from the first vhost");
}

# the script sees its own vhost's ServerName
{
    my @r = $t->transact('udp', method => 'INVITE', uri => 'sip:x@b.example', sock => $t->udp_socket);
    my ($f) = grep { $_->code >= 200 } @r;
    is($f && $f->header('x-server'), 'b.example', 'SERVER_NAME of the chosen vhost reaches the script');
}

# per-vhost logging: only vhost a's requests go to its CustomLog
{
    my $log = $t->dir . '/logs/a.log';
    $t->transact('udp', method => 'INVITE', uri => 'sip:x@a.example', call_id => 'only-a@test',
                 sock => $t->udp_socket);
    $t->transact('udp', method => 'INVITE', uri => 'sip:x@b.example', call_id => 'only-b@test',
                 sock => $t->udp_socket);
    ok(wait_until(3, sub { -s $log && `cat $log` =~ /only-a\@test 486/ }), "vhost a's CustomLog has its request");
    unlike(-s $log ? `cat $log` : '', qr/only-b\@test/, "vhost a's CustomLog has no request of vhost b");
}

# a name-based vhost sends through the socket of its address (UDP proxying)
{
    my $uas = $t->udp_socket;
    open(my $fh, '>', $t->var . '/uas-port') or die $!;
    print $fh $uas->sockport;
    close $fh;
    my $uac = $t->udp_socket;
    $t->udp_send($t->sip_request(method => 'INVITE', uri => 'sip:fwd@b.example', sock => $uac,
                                 call_id => 'fwd-b@test'), sock => $uac);
    my ($inv) = map { parse_msg($_) } grep { defined } $t->udp_recv($uas, 5);
    ok($inv && $inv->method eq 'INVITE', 'vhost b proxied the INVITE over UDP');
    like($inv ? $inv->header('via') : '', qr{^SIP/2\.0/UDP 127\.0\.0\.1:$port;}i,
         "its Via names the shared SIP address");
    if ($inv) {
        (my $resp = "SIP/2.0 486 Busy Here\r\n") .= join('', map { "$_\r\n" }
            (map { "Via: $_" } $inv->headers('via')),
            'From: ' . $inv->header('from'), 'To: ' . $inv->header('to') . ';tag=uas1',
            'Call-ID: ' . $inv->header('call-id'), 'CSeq: ' . $inv->header('cseq'),
            'Content-Length: 0') . "\r\n";
        $t->udp_send($resp, sock => $uas, port => $port);
    }
    my $final;
    for (1 .. 5) {
        my $d = $t->udp_recv($uac, 3) // last;
        my $m = parse_msg($d);
        if ($m->code && $m->code >= 200) { $final = $m; last }
    }
    is($final && $final->code, 486, "the downstream 486 came back to the caller through vhost b");
}

$t->stop;
done_testing();

#!/usr/bin/perl
# ErrorDocument-style bodies for the server's own SIP error answers (seed
# 002 §7.4.1): SipErrorDocument with a text or a file (text/html for .html)
# per vhost and per <Location>, "default" to drop an inherited one, core's
# text ErrorDocument for codes httpd knows; never on responses that scripts
# or downstream servers wrote; bad values refused at configuration time.
use strict;
use warnings;
use Test::More;
use SipTest qw(parse_msg);

my $MODDIR = '/usr/lib/apache2/modules';
my $html = "<html><body><h1>403</h1><p>Not for you.</p></body></html>\n";

my $t = SipTest->new(
    vhost_conf => join("\n",
        'SipErrorDocument 404 "No such user here."',
        'SipErrorDocument 403 @DIR@/forbidden.html',
        'SipErrorDocument 486 "never used: scripts write their own 486"',
        ''),
    server_conf => join("\n",
        "LoadModule authz_host_module $MODDIR/mod_authz_host.so",
        'ErrorDocument 500 "The script broke."',
        '<Location "/special@127.0.0.1">',
        '    SipErrorDocument 404 "Special 404 text"',
        '</Location>',
        '<Location "/plain@127.0.0.1">',
        '    SipErrorDocument 404 default',
        '</Location>',
        '<Location "/deny@127.0.0.1">',
        '    Require ip 192.0.2.1',
        '</Location>',
        ''),
    scripts => {
        'busy@127.0.0.1'  => "#!/bin/sh\nprintf 'SIP/2.0 486 Busy Here\\n\\n'\n",
        'crash@127.0.0.1' => "#!/bin/sh\nkill -SEGV \$\$\n",
    },
    setup => sub {
        my $t = shift;
        open(my $fh, '>', $t->dir . '/forbidden.html') or die $!;
        print $fh $html;
        close $fh;
        chmod 0644, $t->dir . '/forbidden.html';
    },
);
my $port = $t->sip_port;

sub final {
    my ($tr, $user, %o) = @_;
    my @r = $t->transact($tr, method => $o{method} // 'INVITE', uri => "sip:$user\@127.0.0.1:$port",
                         sock => ($tr eq 'udp' ? $t->udp_socket : undef), %o);
    my ($f) = grep { $_->code >= 200 } @r;
    return $f;
}

sub check_body {
    my ($f, $code, $type, $body, $label) = @_;
    is($f && $f->code, $code, "$label: $code");
    is($f && $f->header('content-type'), $type, "$label: Content-Type $type");
    is($f && $f->body, $body, "$label: body");
    is($f && $f->header('content-length'), length($body), "$label: Content-Length matches the body");
}

for my $tr (qw(udp tcp)) {
    check_body(final($tr, 'nobody'), 404, 'text/plain', 'No such user here.', "$tr: vhost SipErrorDocument");
    check_body(final($tr, 'special'), 404, 'text/plain', 'Special 404 text', "$tr: <Location> SipErrorDocument");
    check_body(final($tr, 'deny'), 403, 'text/html', $html, "$tr: file SipErrorDocument (.html)");
}

{
    my $f = final('udp', 'plain');
    is($f && $f->code, 404, 'SipErrorDocument default: 404');
    ok($f && !defined $f->header('content-type') && ($f->header('content-length') // '') eq '0' && $f->body eq '',
       'SipErrorDocument default: no body (the inherited one is dropped)');
}

check_body(final('udp', 'crash'), 500, 'text/plain', 'The script broke.', 'core ErrorDocument text for 500');

{
    my $f = final('udp', 'busy');
    is($f && $f->code, 486, "a script's own 486 is relayed");
    is($f && $f->body, '', '... without the SipErrorDocument body (the script wrote the response)');
}

# a 2xx never gets one, and a body-carrying error keeps a TCP connection usable
{
    my $s = $t->tcp_connect;
    my @a = $t->transact('tcp', sock => $s, method => 'INVITE', uri => "sip:nobody\@127.0.0.1:$port");
    my @b = $t->transact('tcp', sock => $s, method => 'OPTIONS', uri => "sip:nobody\@127.0.0.1:$port");
    is(@a && $a[-1]->code, 404, 'TCP: 404 with a body');
    is(@b && $b[-1]->code, 200, 'TCP: the next request on the same connection is answered');
    is(@b && $b[-1]->header('content-type'), undef, 'the 200 to OPTIONS has no error body');
}

$t->stop;

# configuration errors stop httpd at start (apache2 -t, through the
# harness so that the sanitizer runtimes are preloaded under make test-asan)
for my $bad (['SipErrorDocument 200 "ok"', qr/SIP error code, 400 to 699/],
             ['SipErrorDocument 404 /nonexistent/file.html', qr/cannot read/]) {
    my $c = SipTest->new(start => 0, vhost_conf => $bad->[0]);
    $c->write_conf;
    my ($rc, $out) = $c->_run_apache('-t');
    $c->cleanup_dir;
    isnt($rc, 0, "'$bad->[0]' refused by apache2 -t");
    like($out, $bad->[1], '... with a message saying why');
}

done_testing();

#!/usr/bin/perl
# Script names that try to leave SipDirectory (or pick hidden files) must not
# run anything, not even the default script.
use strict;
use warnings;
use Test::More;
use SipTest qw(parse_msg);

sub marker_script {
    my ($marker, $tag) = @_;
    return "#!/bin/sh\necho run >> \@VAR\@/$marker.marker\n"
         . "printf 'SIP/2.0 200 OK\\r\\nX-Script: $tag\\r\\n\\r\\n'\n";
}

my $t = SipTest->new(
    scripts => {
        'default.cgi'        => marker_script('default', 'default'),
        'good@127.0.0.1'     => marker_script('good', 'good'),
        'inlink@127.0.0.1'   => { symlink => 'good@127.0.0.1' },
        'evil@127.0.0.1'     => { symlink => '@DIR@/outside/evil.sh' },
        '..@127.0.0.1'       => marker_script('dotdot', 'dotdot'),
        '.hidden@127.0.0.1'  => marker_script('hidden', 'hidden'),
        'a/b@127.0.0.1'      => marker_script('subdir', 'subdir'),
        'x'                  => marker_script('nul', 'nul'),
    },
    setup => sub {
        my $t = shift;
        $t->write_script($t->dir . '/outside/evil.sh', abs => 1, text => marker_script('evil', 'evil'));
        $t->write_script($t->dir . '/up@127.0.0.1', abs => 1, text => marker_script('up', 'up'));
    },
);
my $port = $t->sip_port;
my $var = $t->var;

sub markers {
    opendir(my $d, $var) or return ();
    my @m = sort grep { /\.marker$/ } readdir $d;
    return @m;
}

# the start-up probe (an OPTIONS) may have run default.cgi already
unlink map { "$var/$_" } markers();

my @bad = (
    [ '..',                        'user ".."' ],
    [ '.hidden',                   'hidden file' ],
    [ 'a%2Fb',                     'escaped slash' ],
    [ 'a/b',                       'literal slash' ],
    [ '%2e%2e',                    'escaped ".."' ],
    [ '..%2Fup',                   '"../up"' ],
    [ '..%2F..%2Fetc%2Fpasswd',    '"../../etc/passwd"' ],
    [ '%2Fetc%2Fpasswd',           'absolute path' ],
    [ 'x%00y',                     'NUL byte' ],
    [ 'a%00b',                     'NUL byte (2)' ],
    [ 'evil',                      'symlink to a script outside SipDirectory' ],
);

for my $tr (qw(udp tcp)) {
    for my $b (@bad) {
        my ($user, $what) = @$b;
        my @r = $t->transact($tr, method => 'MESSAGE', uri => "sip:$user\@127.0.0.1:$port",
                             sock => ($tr eq 'udp' ? $t->udp_socket : undef));
        my $code = @r ? $r[-1]->code : 'none';
        # an escaped NUL anywhere in the Request-URI is refused as malformed (400)
        my @ok = $user =~ /%00/ ? ('400') : ('403', '404');
        ok((grep { $code eq $_ } @ok), "$tr: $what ($user) -> @ok")
            or diag("got $code" . (@r ? "\n" . $r[-1]->raw : ''));
        my @m = markers();
        ok(!@m, "$tr: $what ($user): no script ran (neither the target nor default.cgi)")
            or diag("markers: @m");
        unlink map { "$var/$_" } @m;
    }
}

# ---- positive controls: a symlink inside SipDirectory runs; default works
for my $tr (qw(udp tcp)) {
    my @r = $t->transact($tr, method => 'MESSAGE', uri => "sip:inlink\@127.0.0.1:$port",
                         sock => ($tr eq 'udp' ? $t->udp_socket : undef));
    is(@r && $r[-1]->code, 200, "$tr: symlink to a script inside SipDirectory runs");
    is(@r && $r[-1]->header('x-script'), 'good', "$tr: ... and runs the link target");
    ok(-e "$var/good.marker", "$tr: target script wrote its marker");
    unlink "$var/good.marker";

    @r = $t->transact($tr, method => 'MESSAGE', uri => "sip:nobody\@127.0.0.1:$port",
                      sock => ($tr eq 'udp' ? $t->udp_socket : undef));
    is(@r && $r[-1]->header('x-script'), 'default', "$tr: control: default.cgi answers unknown users");
    ok(-e "$var/default.marker", "$tr: control: default.cgi wrote its marker");
    unlink "$var/default.marker";
}

$t->dump_log_on_failure;
$t->stop;
done_testing;

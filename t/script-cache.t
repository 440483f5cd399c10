#!/usr/bin/perl
# SipDirectory lookups are cached (sip_cgi.c): a script added, removed or
# replaced is seen at once, and a symlink swapped to lead outside
# SipDirectory after its answer was cached is refused at once.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep);
use SipTest;

sub script {
    my ($tag, $marker) = @_;
    my $mark = $marker ? "echo run >> \@VAR\@/$marker.marker\n" : '';
    return "#!/bin/sh\n${mark}printf 'SIP/2.0 200 OK\\r\\nX-Script: $tag\\r\\n\\r\\n'\n";
}

my $t = SipTest->new(
    scripts => {
        'a@127.0.0.1'    => script('a1'),
        'target'         => script('inside'),
        'link@127.0.0.1' => { symlink => 'target' },
    },
    setup => sub {
        my $t = shift;
        $t->write_script($t->dir . '/outside/evil.sh', abs => 1, text => script('evil', 'evil'));
    },
);
my $port = $t->sip_port;
my $dir = $t->scripts_dir;
my $var = $t->var;

sub ask {
    my ($user) = @_;
    my @r = $t->transact('udp', method => 'MESSAGE', uri => "sip:$user\@127.0.0.1:$port",
                         sock => $t->udp_socket);
    return @r ? ($r[-1]->code, $r[-1]->header('x-script') // '') : ('none', '');
}

# every answer below is asked twice, the second past the cache's racy
# window (20 ms), so that it comes from the cache
sub twice {
    my ($user, $code, $tag, $what) = @_;
    for my $n (1, 2) {
        my ($c, $x) = ask($user);
        is("$c $x", "$code $tag", "$what ($n)");
        sleep 0.05;
    }
}

sleep 0.05;
twice('a', 200, 'a1', 'a script runs');
twice('new', 404, '', 'no script: 404');

$t->write_script('new@127.0.0.1', text => script('new'));
twice('new', 200, 'new', 'a script added after a cached 404 runs at once');

$t->write_script('a@127.0.0.1', text => script('a2'));
twice('a', 200, 'a2', 'a script replaced (new file) runs the new one at once');

{   # rewritten in place: the same file, the directory unchanged
    open(my $fh, '>', "$dir/a\@127.0.0.1") or die;
    print $fh $t->subst(script('a3'));
    close $fh;
}
twice('a', 200, 'a3', 'a script rewritten in place runs its new text');

{   # replaced by rename, as deployment tools do
    open(my $fh, '>', "$dir/.a.tmp") or die;
    print $fh $t->subst(script('a4'));
    close $fh;
    chmod 0755, "$dir/.a.tmp";
    rename("$dir/.a.tmp", "$dir/a\@127.0.0.1") or die;
}
twice('a', 200, 'a4', 'a script renamed over the old one runs at once');

$t->remove_script('new@127.0.0.1');
twice('new', 404, '', 'a script removed is gone at once');

twice('link', 200, 'inside', 'a symlink inside SipDirectory runs');
symlink($t->dir . '/outside/evil.sh', "$dir/.link.tmp") or die;
rename("$dir/.link.tmp", "$dir/link\@127.0.0.1") or die;
for my $n (1, 2) {
    my ($c, $x) = ask('link');
    ok($c eq '403' || $c eq '404', "the same symlink swapped to lead outside is refused ($n)")
        or diag("got $c $x");
    ok(!-e "$var/evil.marker", "... and the outside script did not run ($n)");
    sleep 0.05;
}

$t->dump_log_on_failure;
$t->stop;
done_testing;

#!/usr/bin/perl
# The routing steps for a request to one of our users (sip_dispatch.c,
# docs/architecture.md): SipDirectory's user@host SIP-CGI before its
# user@host.cpl, a user's own CPL before default.cpl, default.cgi before
# default.cpl, SipCplDefaultScript (a name, none); a CPL script that
# leaves the call alone or fails at run time passes it to the next step;
# CPL only for an INVITE outside a dialog (OPTIONS, MESSAGE and a re-INVITE
# skip it), over UDP and TCP; bad directive values refused by apache2 -t.
use strict;
use warnings;
use Test::More;
use SipCgiTest qw(parse_msg wait_until rand_token);

my $NS = 'urn:ietf:params:xml:ns:cpl';
sub cpl { my ($body) = @_; return qq{<?xml version="1.0"?>\n<cpl xmlns="$NS">$body</cpl>\n} }
sub rejecting { my ($code, $reason) = @_; return cpl(qq{<incoming><reject status="$code" reason="$reason"/></incoming>}) }
my %F = (mode => 0644);

my $t = SipCgiTest->new(
    scripts => {
        'default.cpl'          => { text => rejecting(488, 'default cpl'), %F },
        'both@127.0.0.1'       => "#!/bin/sh\nprintf 'SIP/2.0 486 From CGI\\n\\n'\n",
        'both@127.0.0.1.cpl'   => { text => rejecting(486, 'From CPL'), %F },
        'own@127.0.0.1.cpl'    => { text => rejecting(486, 'own cpl'), %F },
        'outonly@127.0.0.1.cpl' => { text => cpl('<outgoing><reject status="403"/></outgoing>'), %F },
        'fail@127.0.0.1.cpl'   => { text => cpl('<incoming><redirect/></incoming>'), %F },
        'quiet@127.0.0.1.cpl'  => { text => cpl('<incoming><log comment="just looking"/></incoming>'), %F },
    },
);
my $port = $t->sip_port;
my $engine = $t->engine_pid;
my $caller = $t->peer(name => 'caller');

sub call {
    my ($user, %o) = @_;
    my $tr = $o{transport} // 'udp';
    if ($tr eq 'tcp') {
        my @x = $t->transact('tcp', method => $o{method} // 'INVITE', uri => $t->local_uri($user),
                             headers => $o{headers} // []);
        return @x ? $x[-1] : undef;
    }
    my $inv = $caller->request(method => $o{method} // 'INVITE', uri => $t->local_uri($user),
                               ($o{to} ? (to => $o{to}) : ()), headers => $o{headers} // []);
    my $cid = $caller->call_id($inv);
    my $fin = $caller->expect(call_id => $cid, final => 1, timeout => 5);
    $caller->ack($inv, $fin) if $fin && $fin->code >= 300 && ($o{method} // 'INVITE') eq 'INVITE';
    return $fin;
}
sub answer { my ($r) = @_; return $r ? $r->code . ' ' . $r->reason : 'none' }

for my $tr (qw(udp tcp)) {
    is(answer(call('both', transport => $tr)), '486 From CGI', "$tr: user\@host SIP-CGI runs before user\@host.cpl");
    is(answer(call('own', transport => $tr)), '486 own cpl', "$tr: a user's own CPL runs before default.cpl");
    is(answer(call('nobody', transport => $tr)), '488 default cpl', "$tr: a user without script gets default.cpl");
    is(answer(call('outonly', transport => $tr)), '488 default cpl',
       "$tr: a script with only <outgoing> leaves incoming calls to the next step");
    is(answer(call('quiet', transport => $tr)), '488 default cpl',
       "$tr: a script ending without an action passes the call on (RFC 3880 §10)");
}

# a run-time failure: logged with script and node, counted, next step
{
    my $mark = $t->log_mark;
    is(answer(call('fail')), '488 default cpl', 'a script failing at run time falls back to the next step');
    my @l = grep { /cpl: fail\@127\.0\.0\.1\.cpl \(owner sip:fail\@127\.0\.0\.1\) failed at <redirect> on 127\.0\.0\.1: .*next routing step/ }
            split /\n/, $t->log_since($mark);
    ok(@l, '... and the log line names the script, the node and this node') or diag($t->log_since($mark));
}

# CPL only for INVITE outside a dialog
is(call('own', method => 'OPTIONS')->code, 200, 'OPTIONS to a user with a CPL script: not run (server\'s 200)');
is(call('own', method => 'MESSAGE')->code, 404, 'MESSAGE: not run (default handling, 404)');
is(call('own', to => '<' . $t->local_uri('own') . '>;tag=abc')->code, 404,
   'an INVITE with a To tag (re-INVITE): not run');

# default.cgi comes before default.cpl
$t->write_script('default.cgi', text => "#!/bin/sh\nprintf 'SIP/2.0 480 default cgi\\n\\n'\n");
is(answer(call('nobody')), '480 default cgi', 'default.cgi runs before default.cpl');
is(answer(call('own')), '486 own cpl', '... but after the user\'s own CPL');
$t->remove_script('default.cgi');

# an edited administrator script takes effect at once (stat'ed per call)
sleep 1.1;
$t->write_script('own@127.0.0.1.cpl', text => rejecting(486, 'own cpl, edited'), %F);
is(answer(call('own')), '486 own cpl, edited', 'an edited user@host.cpl is used on the next call');
# and one made invalid is skipped (logged), not run
$t->write_script('own@127.0.0.1.cpl', text => cpl('<incoming><reject status="busy"/><reject status="busy"/></incoming>'), %F);
{
    my $mark = $t->log_mark;
    is(answer(call('own')), '488 default cpl', 'an invalid user@host.cpl at call time is skipped');
    like($t->log_since($mark), qr/cpl: own\@127\.0\.0\.1\.cpl is not a usable CPL script, skipped/, '... with a log line');
}
# symlinks out of SipDirectory are not followed for CPL either
{
    my $outside = $t->dir . '/outside.cpl';
    open(my $fh, '>', $outside) or die; print $fh rejecting(486, 'outside'); close $fh; chmod 0644, $outside;
    $t->write_script('link@127.0.0.1.cpl', symlink => $outside);
    my $mark = $t->log_mark;
    is(answer(call('link')), '488 default cpl', 'a .cpl symlink leading out of SipDirectory is not used');
    like($t->log_since($mark), qr/link\@127\.0\.0\.1\.cpl .*resolves outside SipDirectory/, '... logged');
}
# SipCplMail Off (the default): a <mail> action sends nothing, says so
$t->write_script('mailer@127.0.0.1.cpl', text => cpl('<incoming><mail url="mailto:a@example.com"><reject status="486"/></mail></incoming>'), %F);
{
    my $mark = $t->log_mark;
    is(call('mailer')->code, 486, 'a mail action with SipCplMail Off: the script goes on');
    like($t->log_since($mark), qr/cpl: mailer\@127\.0\.0\.1\.cpl \(owner sip:mailer\@127\.0\.0\.1\): mail not sent: SipCplMail Off/,
         '... and the log says no mail was sent');
}
is($t->engine_pid, $engine, 'the engine was never restarted');
$t->stop;

# SipCplDefaultScript: another name, and none
{
    my $u = SipCgiTest->new(vhost_conf => 'SipCplDefaultScript fallback.cpl',
                            scripts => { 'default.cpl' => { text => rejecting(488, 'default cpl'), %F },
                                         'fallback.cpl' => { text => rejecting(480, 'fallback'), %F } });
    my $c = $u->peer(name => 'c');
    my $inv = $c->invite(uri => $u->local_uri('nobody'));
    my $f = $c->final_for($inv, 5);
    is(answer($f), '480 fallback', 'SipCplDefaultScript fallback.cpl is the default CPL script');
    $u->stop;
    my $v = SipCgiTest->new(vhost_conf => 'SipCplDefaultScript none',
                            scripts => { 'default.cpl' => { text => rejecting(488, 'default cpl'), %F } });
    $c = $v->peer(name => 'c');
    $inv = $c->invite(uri => $v->local_uri('nobody'));
    $f = $c->final_for($inv, 5);
    is($f && $f->code, 404, 'SipCplDefaultScript none: no default CPL script (default handling, 404)');
    $v->stop;
}

# bad values refused at start-up
for my $case (['SipCplDefaultScript ../etc/x.cpl', qr/SipCplDefaultScript must be a plain file name/],
              ['SipCplDefaultScript .hidden', qr/SipCplDefaultScript must be a plain file name/],
              ['SipCplMail sendmail', qr/SipCplMail needs Off or a command line starting with an absolute path/],
              ['SipCplMail "/nonexistent/sendmail -t"', qr/SipCplMail: \/nonexistent\/sendmail is not an executable file/],
              ['SipCplMail /etc/passwd', qr/is not an executable file/]) {
    my ($conf, $re) = @$case;
    my $bad = SipTest->new(vhost_conf => $conf, start => 0);
    $bad->write_conf;
    my ($rc, $out) = $bad->_run_apache('-t');
    isnt($rc, 0, "$conf: apache2 -t fails");
    like($out // '', $re, '... saying why');
    $bad->cleanup_dir if $bad->can('cleanup_dir');
}
{
    my $ok = SipTest->new(vhost_conf => "SipCplMail Off\nSipCplMail \"/bin/cat -u\"", start => 0);
    $ok->write_conf;
    my ($rc, $out) = $ok->_run_apache('-t');
    is($rc, 0, 'SipCplMail Off and an absolute command line are accepted') or diag($out);
    $ok->cleanup_dir if $ok->can('cleanup_dir');
}
done_testing;

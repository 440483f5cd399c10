#!/usr/bin/perl
# Routing without scripts (issue 15, docs/routing.md): the example rule
# table of seed 002 §6 for cs.columbia.edu, end to end, written for mod_sip
# twice -- as a SipRuleFile and as SipRule lines in <If>/<Location>
# sections -- each on its own httpd.  Translated to loopback:
#
#   cs.columbia.edu             the vhost, 127.0.0.1 (other.test: a
#                               ServerAlias, a domain "we don't handle")
#   aol.com                     kept: the From domain of the AOL caller
#   sip://vp@example.com        a UDP peer on loopback ("vp")
#   voice-mail.cs.columbia.edu  a UDP peer on loopback ("vm")
#   /usr/local/bin/user_script  SipDirectory's SIP-CGI script user_script:
#                               it runs the callee's own script (own/<user>)
#                               and leaves the call alone for the others
#   log |/usr/local/bin/logger  CustomLog ... env=sip-rule-log
#
# For every line of the table, a request that triggers it and what the
# caller and the peers get.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use SipCgiTest qw(parse_msg rand_token wait_until);
use SipDigest qw(digest_challenge digest_credentials write_htdigest);
use SipTest qw(free_port);

my $REALM = 'cs.test';
my $M = $SipTest::MODDIR;

# user_script: the seed's /usr/local/bin/user_script.  Callee-written
# scripts live in SipDirectory's own/ directory, named by user.
my $USER_SCRIPT = <<'SH';
# the callee's own (user-specific) script, if the callee wrote one
u=${REQUEST_URI#sip:}
u=${u%%@*}
case "$u" in *[!A-Za-z0-9._-]*|'') exit 0 ;; esac
f="@SCRIPTS@/own/$u"
[ -x "$f" ] && exec "$f"
# none: no output, the server's default action
exit 0
SH

my $BOB_SCRIPT = "#!/bin/sh\nprintf 'SIP/2.0 486 Busy Here\\n\\n'\n";

# The seed's table as a SipRuleFile, its lines as the seed writes them
# (SipRuleFile reads "From * INVITE", "To *-voicemail record host" and
# "sip://" too), with two changes (docs/routing.md): "log" takes no
# program (CustomLog env=sip-rule-log writes the lines); the AOL line comes
# before the lines that answer (rules stop at the first answer: at the end
# it would never be reached for a local callee).  The seed's "302" line
# runs when the script leaves the call to the server (seed §6).
sub rule_file {
    my ($t, $vp, $vm) = @_;
    my $script = $t->scripts_dir . '/user_script';
    return <<"RULES";
# The seed's table (002 §6) for cs.columbia.edu, on loopback.
# We log all calls, but not registrations.
From * INVITE log
# We allow registration only from local users
From REGISTER 127.0.0.1 200
From REGISTER * 404
# We require that AOL users are authenticated.
From INVITE aol.com authenticate
# We forward calls to some alumni.
To INVITE graduated\@127.0.0.1 301 sip://vp\@127.0.0.1:$vp
# Calls to *-voicemail get voicemail (probably by indirection).
To *-voicemail record 127.0.0.1:$vm
# All other calls are subject to callee-written (user-specific) scripts.
To INVITE 127.0.0.1 $script
# We are a redirect server; the server figures out the location.
To INVITE 127.0.0.1 302
# We don't handle any other domains.
To INVITE * 404
RULES
}

# The same table as SipRule lines in sections.  Rules of <Location>
# sections run before those of <If> sections at the vhost level, and <If>s
# nested in a <Location> after those (sip_rules.h): so the per-callee
# lines are <If>s nested in their <Location>, after the vhost's <If>s.
sub rule_sections {
    my ($vp, $vm) = @_;
    my $here = '@127\.0\.0\.1([:;>]|$)';
    return <<"CONF";
# We log all calls, but not registrations.
<If "%{REQUEST_METHOD} == 'INVITE'">
    SipRule log
</If>
# We allow registration only from local users.
<If "%{REQUEST_METHOD} == 'REGISTER' && %{HTTP:From} =~ /$here/">
    SipRule respond 200
</If>
<ElseIf "%{REQUEST_METHOD} == 'REGISTER'">
    SipRule respond 404
</ElseIf>
# We require that AOL users are authenticated.
<If "%{REQUEST_METHOD} == 'INVITE' && %{HTTP:From} =~ /aol\\.com([:;>]|\$)/">
    SipRule authenticate digest
</If>
# We forward calls to some alumni.
<Location "/graduated\@127.0.0.1">
    <If "%{REQUEST_METHOD} == 'INVITE'">
        SipRule respond 301 sip:vp\@127.0.0.1:$vp
    </If>
</Location>
# Calls to *-voicemail get voicemail (by indirection).
<Location "/*-voicemail\@127.0.0.1">
    <If "%{REQUEST_METHOD} == 'INVITE'">
        SipRule record 127.0.0.1:$vm
    </If>
</Location>
<Location "/">
    # Callee-written scripts; when the script leaves the call alone, we
    # are a redirect server: the server figures out the location.
    <If "%{REQUEST_METHOD} == 'INVITE' && %{HTTP:To} =~ /$here/">
        SipRule script user_script
        SipRule respond 302
    </If>
    # We don't handle any other domains.
    <ElseIf "%{REQUEST_METHOD} == 'INVITE'">
        SipRule respond 404
    </ElseIf>
</Location>
CONF
}

sub server {
    my ($form) = @_;
    my ($vp_port, $vm_port) = (free_port(), free_port());
    my $rules = $form eq 'file' ? 'SipRuleFile @DIR@/seed.rules'
                                : rule_sections($vp_port, $vm_port);
    my $t = SipCgiTest->new(
        start => 0,
        server_conf => join("\n",
            "LoadModule authn_core_module $M/mod_authn_core.so",
            "LoadModule authn_file_module $M/mod_authn_file.so",
            # credentials for the "authenticate" rule; nothing else asks
            '<Location "/">', "    AuthName \"$REALM\"", '    AuthUserFile @DIR@/users.htdigest',
            '</Location>', ''),
        vhost_conf => join("\n",
            'ServerAlias other.test',
            'LogFormat "%{Call-ID}i %>s \\"%r\\"" seedlog',
            'CustomLog @DIR@/logs/calls.log seedlog env=sip-rule-log',
            'CustomLog @DIR@/logs/all.log seedlog',
            # the seed's "log |/usr/local/bin/logger": a piped CustomLog
            'CustomLog "|$/bin/cat >> @DIR@/logs/piped.log" seedlog env=sip-rule-log',
            $rules),
        scripts => { 'own/bob' => $BOB_SCRIPT });
    # recorded runs (SipCgiTest): how often the rules ran it, for which call
    $t->cgi_script('user_script', $USER_SCRIPT);
    open(my $fh, '>', $t->dir . '/seed.rules') or die "seed.rules: $!";
    print $fh rule_file($t, $vp_port, $vm_port);
    close $fh;
    chmod 0644, $t->dir . '/seed.rules';
    write_htdigest($t->dir . '/users.htdigest', $REALM, fan => 'aolrules');
    my $vp = $t->peer(name => 'vp', port => $vp_port);
    my $vm = $t->peer(name => 'vm', port => $vm_port);
    $t->start;
    return ($t, $vp, $vm);
}

sub lines_of {
    my ($f) = @_;
    open(my $fh, '<', $f) or return ();
    chomp(my @l = <$fh>);
    return @l;
}

sub seed_table {
    my ($form) = @_;
    my ($t, $vp, $vm) = server($form);
    my $port = $t->sip_port;
    my $uac = $t->peer(name => 'caller');
    my (%logged, %unlogged, $vm_call);
    my $carol_contact = 'sip:carol@127.0.0.1:' . free_port();

    # one request from the caller; returns its final response (the
    # non-2xx INVITE answers are ACKed)
    my $send = sub {
        my (%a) = @_;
        my $raw = $uac->request(%a);
        my $fin = $uac->expect(call_id => $uac->call_id($raw), final => 1, timeout => 5);
        $uac->ack($raw, $fin) if $fin && $a{method} eq 'INVITE' && $fin->code >= 300;
        return wantarray ? ($fin, $raw) : $fin;
    };
    my $local = sub { my ($u) = @_; return "<sip:$u\@127.0.0.1>;tag=" . rand_token(8) };

    # ---- From REGISTER cs.columbia.edu 200 / From REGISTER * 404
    {
        my $cid = "reg-carol-$form\@test";
        my $r = $send->(method => 'REGISTER', uri => "sip:127.0.0.1:$port", call_id => $cid,
                        from => $local->('carol'), to => '<sip:carol@127.0.0.1>',
                        headers => [ Contact => "<$carol_contact>", Expires => 3600 ]);
        is($r && $r->code, 200, "$form: REGISTER from a local user: 200");
        like(join(',', $r ? $r->headers('contact') : ()), qr/\Q$carol_contact\E/,
             "$form: the binding is stored (in the 200)");
        $unlogged{$cid} = 1;

        $cid = "reg-eve-$form\@test";
        $r = $send->(method => 'REGISTER', uri => "sip:127.0.0.1:$port", call_id => $cid,
                     from => '<sip:eve@aol.com>;tag=' . rand_token(8), to => '<sip:eve@127.0.0.1>',
                     headers => [ Contact => '<sip:eve@127.0.0.1:9>', Expires => 3600 ]);
        is($r && $r->code, 404, "$form: REGISTER from elsewhere: 404");
        $unlogged{$cid} = 1;
        # eve has no binding: a fetch (a local REGISTER without Contact) lists none
        $cid = "fetch-eve-$form\@test";
        $r = $send->(method => 'REGISTER', uri => "sip:127.0.0.1:$port", call_id => $cid,
                     from => $local->('eve'), to => '<sip:eve@127.0.0.1>');
        is($r && $r->code, 200, "$form: fetching eve's bindings: 200");
        is(scalar(() = $r ? $r->headers('contact') : ()), 0, "$form: eve was not registered");
        $unlogged{$cid} = 1;
    }

    # ---- To INVITE graduated@cs.columbia.edu 301 sip:vp@example.com
    {
        my $cid = "grad-$form\@test";
        my $r = $send->(method => 'INVITE', uri => "sip:graduated\@127.0.0.1:$port", call_id => $cid,
                        from => $local->('alice'), to => '<sip:graduated@127.0.0.1>');
        is($r && $r->code, 301, "$form: INVITE to graduated: 301");
        my $vp_uri = 'sip:vp@127.0.0.1:' . $vp->port;
        like($r ? $r->header('contact') // '' : '', qr/^<?\Q$vp_uri\E>?/, "$form: Contact is vp");
        is(scalar(my @g = $vp->all(wait => 0.3, request => 1)), 0, "$form: vp itself got nothing from us");
        $logged{$cid} = 1;
    }

    # ---- To *-voicemail record voice-mail.cs.columbia.edu
    {
        my $cid = "vm-$form\@test";
        my $raw = $uac->request(method => 'INVITE', uri => "sip:alice-voicemail\@127.0.0.1:$port",
                                call_id => $cid, from => $local->('bob'),
                                to => '<sip:alice-voicemail@127.0.0.1>');
        my $inv = $vm->expect(method => 'INVITE', timeout => 5);
        ok($inv, "$form: the voice-mail server got the INVITE to alice-voicemail");
        is($inv && $inv->uri, 'sip:alice-voicemail@127.0.0.1:' . $vm->port,
           "$form: Request-URI: the callee at the voice-mail server");
        like($inv ? $inv->header('to') // '' : '', qr/alice-voicemail\@127\.0\.0\.1/, "$form: To unchanged");
        my @via = $inv ? $inv->header_elems('via') : ();
        ok(@via == 2 && $via[0] =~ m{^SIP/2\.0/UDP 127\.0\.0\.1:$port;}, "$form: proxied (our Via on top)")
            or diag(join("\n", @via));
        $vm->reply($inv, 200) if $inv;
        my $fin = $uac->final_for($raw);
        is($fin && $fin->code, 200, "$form: the caller gets the voice-mail server's 200");
        $uac->ack($raw, $fin) if $fin && $fin->code == 200;
        ok($vm->expect(method => 'ACK', timeout => 3), "$form: the ACK reached the voice-mail server");
        is(scalar(my @g = $vp->all(request => 1)), 0, "$form: nothing went to vp");
        $logged{$cid} = 1;
        # the call stays up: hung up after the graceful restart below
        $vm_call = { inv => $raw, ok => $fin } if $fin && $fin->code == 200;
    }

    # ---- From INVITE aol.com authenticate (then the call proceeds)
    {
        my $cid = "aol-$form\@test";
        my $uri = "sip:carol\@127.0.0.1:$port";
        my $from = '<sip:fan@aol.com>;tag=' . rand_token(8);
        my $r = $send->(method => 'INVITE', uri => $uri, call_id => $cid, cseq => 1, from => $from,
                        to => '<sip:carol@127.0.0.1>');
        ok($r && ($r->code == 401 || $r->code == 407), "$form: INVITE from aol.com: challenged")
            or diag($r ? $r->code : 'no answer');
        is($r && $r->code, 401, "$form: 401 (we are the callee's server)");
        my $hdr = $r && $r->code == 407 ? 'proxy-authenticate' : 'www-authenticate';
        my $ch = digest_challenge($r, $hdr);
        ok($ch && $ch->{realm} eq $REALM, "$form: digest challenge in realm $REALM");
        my $cred = digest_credentials(challenge => $ch, user => 'fan', password => 'aolrules',
                                      method => 'INVITE', uri => $uri);
        my $r2 = $send->(method => 'INVITE', uri => $uri, call_id => $cid, cseq => 2, from => $from,
                         to => '<sip:carol@127.0.0.1>',
                         headers => [ ($hdr eq 'www-authenticate' ? 'Authorization' : 'Proxy-Authorization')
                                      => $cred ]);
        is($r2 && $r2->code, 302, "$form: with credentials the call proceeds (to carol's 302)");
        like(join(',', $r2 ? $r2->headers('contact') : ()), qr/\Q$carol_contact\E/,
             "$form: Contact = carol's registered binding");
        # and a wrong password is challenged again
        $cred = digest_credentials(challenge => $ch, user => 'fan', password => 'wrong',
                                   method => 'INVITE', uri => $uri);
        my $r3 = $send->(method => 'INVITE', uri => $uri, call_id => "aol-bad-$form\@test", from => $from,
                         to => '<sip:carol@127.0.0.1>', headers => [ Authorization => $cred ]);
        ok($r3 && ($r3->code == 401 || $r3->code == 403), "$form: wrong password: refused")
            or diag($r3 ? $r3->code : 'no answer');
        $logged{$cid} = 1;
    }

    # ---- To INVITE cs.columbia.edu user_script (a callee who wrote one)
    {
        my $cid = "bob-$form\@test";
        my $r = $send->(method => 'INVITE', uri => "sip:bob\@127.0.0.1:$port", call_id => $cid,
                        from => $local->('alice'), to => '<sip:bob@127.0.0.1>');
        is($r && $r->code, 486, "$form: INVITE to bob: bob's own script answers 486");
        my @runs = $t->runs('user_script', call_id => $cid);
        is(scalar @runs, 1, "$form: user_script ran once for it");
        $logged{$cid} = 1;
    }

    # ---- To INVITE cs.columbia.edu 302 (nobody's script decided)
    {
        my $cid = "carol-$form\@test";
        my $r = $send->(method => 'INVITE', uri => "sip:carol\@127.0.0.1:$port", call_id => $cid,
                        from => $local->('alice'), to => '<sip:carol@127.0.0.1>');
        is($r && $r->code, 302, "$form: INVITE to carol: 302");
        my @c = $r ? $r->header_elems('contact') : ();
        is(scalar @c, 1, "$form: one Contact");
        like($c[0] // '', qr/^<\Q$carol_contact\E>/, "$form: Contact = the registered binding");
        is(scalar(my @runs = $t->runs('user_script', call_id => $cid)), 1,
           "$form: user_script ran and left the call alone");
        $logged{$cid} = 1;

        # a local callee who never registered: nowhere to redirect to
        $cid = "nobody-$form\@test";
        $r = $send->(method => 'INVITE', uri => "sip:nobody\@127.0.0.1:$port", call_id => $cid,
                     from => $local->('alice'), to => '<sip:nobody@127.0.0.1>');
        ok($r && ($r->code == 404 || $r->code == 480), "$form: INVITE to a user with no binding: 404/480")
            or diag($r ? $r->code : 'no answer');
        $logged{$cid} = 1;
    }

    # ---- To INVITE * 404 (a domain we serve but do not handle calls for)
    {
        my $cid = "other-$form\@test";
        my $r = $send->(method => 'INVITE', uri => "sip:carol\@other.test:$port", call_id => $cid,
                        from => $local->('alice'), to => '<sip:carol@other.test>');
        is($r && $r->code, 404, "$form: INVITE to carol\@other.test: 404");
        is(scalar(my @runs = $t->runs('user_script', call_id => $cid)), 0, "$form: no script ran for it");
        $logged{$cid} = 1;
    }

    # ---- in a dialog (a To tag) the rules are not asked: in-dialog
    # requests follow the dialog (docs/routing.md, "What is kept")
    {
        my $cid = "reinvite-$form\@test";
        my $r = $send->(method => 'INVITE', uri => "sip:graduated\@127.0.0.1:$port", call_id => $cid,
                        from => '<sip:fan@aol.com>;tag=' . rand_token(8),
                        to => '<sip:graduated@127.0.0.1>;tag=' . rand_token(8));
        ok($r && $r->code != 301 && $r->code != 401,
           "$form: a re-INVITE (To tag) from aol.com to graduated: no rule answers it")
            or diag($r ? $r->code : 'no answer');
        $unlogged{$cid} = 1;    # nor is it marked by the log rule
    }

    # ---- From * INVITE log: every call in the CustomLog, no registration
    {
        my $calls = $t->dir . '/logs/calls.log';
        my $all = $t->dir . '/logs/all.log';
        my %want = (%logged, %unlogged);
        ok(wait_until(5, sub { my @l = lines_of($all); my %in = map { (split / /)[0] => 1 } @l;
                                !grep { !$in{$_} } keys %want }),
           "$form: every transaction of the test reached the unconditional log");
        my %in = map { (split / /)[0] => 1 } lines_of($calls);
        ok($in{$_}, "$form: call $_ is in the rule's CustomLog") for sort keys %logged;
        ok(!$in{$_}, "$form: registration $_ is not") for sort keys %unlogged;
        my $piped = $t->dir . '/logs/piped.log';
        my %p;
        ok(wait_until(5, sub { %p = map { (split / /)[0] => 1 } lines_of($piped);
                                !grep { !$p{$_} } keys %logged }),
           "$form: the piped CustomLog got every call");
        ok(!(grep { $p{$_} } keys %unlogged), "$form: and no registration");
    }

    is(scalar(my @g = $vp->all(request => 1)), 0, "$form: vp never got a request from the server");
    reload($t, $uac, $vm, $vm_call) if $form eq 'file';
    $t->stop;
}

# BYE for the answered INVITE $c->{inv} (its 200: $c->{ok}), along the
# route set the 200 recorded (RFC 3261 §12.2.1.1).
sub bye {
    my ($t, $uac, $c) = @_;
    my $inv = parse_msg($c->{inv});
    my ($target) = ($c->{ok}->header('contact') // '') =~ /<([^>]+)>/;
    my @rr = $c->{ok}->header_elems('record-route');
    my $raw = "BYE $target SIP/2.0\r\n"
        . 'Via: SIP/2.0/UDP 127.0.0.1:' . $uac->port . ';branch=z9hG4bK' . rand_token(16) . ";rport\r\n"
        . "Max-Forwards: 70\r\n"
        . join('', map { "Route: $_\r\n" } reverse @rr)
        . 'From: ' . $inv->header('from') . "\r\nTo: " . $c->{ok}->header('to') . "\r\n"
        . 'Call-ID: ' . $inv->header('call-id') . "\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
    $uac->send($raw);
    return $raw;
}

# apachectl -t refuses a bad table with its file and line; apachectl
# graceful reads a changed one, and a call set up before it hangs up after.
sub reload {
    my ($t, $uac, $vm, $vm_call) = @_;
    my $file = $t->dir . '/seed.rules';
    open(my $fh, '<', $file) or die "$file: $!";
    my @good = <$fh>;
    close $fh;
    my $write = sub { open(my $o, '>', $file) or die "$file: $!"; print $o @_; close $o };

    my @bad = @good;
    my ($n) = grep { $bad[$_] =~ /^From REGISTER \* 404/ } 0 .. $#bad;
    $bad[$n] = "From REGISTER * 404 sip:nowhere\n";     # only a 3xx takes URIs
    $write->(@bad);
    my ($rc, $out) = $t->_run_apache('-t');
    isnt($rc, 0, 'apachectl -t: a bad rule is a configuration error');
    like($out, qr/\Q$file\E:@{[ $n + 1 ]}:/, 'apachectl -t names the file and the line') or diag($out);

    # the alumnus moves: graduated now goes to the voice-mail peer's host
    my $new = 'sip:vp@127.0.0.1:' . $vm->port;
    $write->(map { s{^(To INVITE graduated\@\S+ 301) \S+}{$1 $new}r } @good);
    ($rc, $out) = $t->_run_apache('-t');
    is($rc, 0, 'apachectl -t accepts the changed table') or diag($out);
    ok($t->apachectl('graceful'), 'apachectl graceful');
    my $port = $t->sip_port;
    my $r;
    ok(wait_until(10, sub {
        my $raw = $uac->request(method => 'INVITE', uri => "sip:graduated\@127.0.0.1:$port",
                                from => '<sip:alice@127.0.0.1>;tag=' . rand_token(8),
                                to => '<sip:graduated@127.0.0.1>');
        $r = $uac->expect(call_id => $uac->call_id($raw), final => 1, timeout => 1);
        $uac->ack($raw, $r) if $r && $r->code >= 300;
        return $r && ($r->header('contact') // '') =~ /\Q$new\E/;
    }, 0.2), 'after the graceful restart the changed rule answers (301 to the new address)')
        or diag($r ? $r->code . ' ' . ($r->header('contact') // '') : 'no answer');

    if (ok($vm_call, 'the voice-mail call was set up before the restart')) {
        bye($t, $uac, $vm_call);
        my $b = $vm->expect(method => 'BYE', timeout => 5);
        ok($b, 'its BYE after the restart reaches the voice-mail server through the proxy');
        $vm->reply($b, 200) if $b;
        my $fin = $uac->expect(call_id => parse_msg($vm_call->{inv})->header('call-id'),
                               cseq_method => 'BYE', final => 1, timeout => 5);
        is($fin && $fin->code, 200, "the caller gets the voice-mail server's 200 for the BYE");
    }
}

seed_table('file');
seed_table('sections');

done_testing;

#!/usr/bin/perl
# The registrar and SIP-CGI scripts (RFC 3050 §5.5.1.6 REGISTRATIONS):
#   * REGISTRATIONS holds the Request-URI user's bindings in Contact syntax
#     (comma separated, like the 200's Contacts), absent when there is none;
#   * a REGISTER runs the script of the user it registers (the To user,
#     RFC 3050 §5.9) first: 200 from the script -> nothing stored; no output
#     (exit 0) -> default action, the registrar stores the binding; 403 ->
#     nothing;
#   * a script's default action for another request uses the location
#     service (proxied to the registered contact);
#   * REGISTRATIONS no longer lists an expired binding (SipMinExpires 1).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(parse_msg rand_token wait_until);
use SipRegTest;

# env dump (atomic) then an answer depending on the script; with $pass_reg
# a REGISTER is left to the registrar (exit 0 without output)
sub script {
    my ($name, $answer, $pass_reg) = @_;
    return "#!/bin/sh\n"
        . "/usr/bin/env > \@VAR\@/$name.env.\$\$ && /bin/mv \@VAR\@/$name.env.\$\$ \@VAR\@/$name.env\n"
        . "echo \"\$REQUEST_METHOD\" >> \@VAR\@/$name.runs\n"
        . ($pass_reg ? "[ \"\$REQUEST_METHOD\" = REGISTER ] && exit 0\n" : '')
        . ($answer ? "printf '$answer'\n" : "exit 0\n");
}

my $t = SipRegTest->new(scripts => {
    'bob@127.0.0.1'     => script('bob',     'SIP/2.0 200 OK\n\n', 1),
    'carol@127.0.0.1'   => script('carol',   'SIP/2.0 200 OK\n\n', 1),
    'reg200@127.0.0.1'  => script('reg200',  'SIP/2.0 200 OK\n\n'),
    'regnone@127.0.0.1' => script('regnone', ''),
    'reg403@127.0.0.1'  => script('reg403',  'SIP/2.0 403 Forbidden\n\n'),
    'fwd@127.0.0.1'     => script('fwd',     ''),
    'short@127.0.0.1'   => script('short',   'SIP/2.0 200 OK\n\n', 1),
    'dan@127.0.0.1'     => script('dan',     'SIP/2.0 486 Busy Here\n\n', 1),
}, vhost_conf => 'SipMinExpires 1');
my $port = $t->sip_port;
my $var = $t->var;

sub read_env {
    my ($name) = @_;
    open(my $fh, '<', "$var/$name.env") or return undef;
    my %e;
    while (my $l = <$fh>) {
        chomp $l;
        $e{$1} = $2 if $l =~ /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/;
    }
    return \%e;
}

sub runs {
    my ($name) = @_;
    open(my $fh, '<', "$var/$name.runs") or return wantarray ? () : 0;
    chomp(my @l = <$fh>);
    return wantarray ? @l : scalar(@l);
}

sub clear { unlink "$var/$_[0].env", "$var/$_[0].runs" }

# ---------------------------------------------------------------- REGISTRATIONS
{
    # bob's REGISTER (to the domain) runs bob's script, which leaves it to the registrar
    my $r = $t->register(user => 'bob', contacts => [ '<sip:bob@127.0.0.1:5061>;expires=600, <sip:bob-pc@127.0.0.1:5062;transport=tcp>;q=0.5' ],
                         expires => 1800);
    is($r && $r->code, 200, 'bob registered two contacts (REGISTER sip:127.0.0.1:SIPPORT)');
    is_deeply([ runs('bob') ], [ 'REGISTER' ], "bob's script ran for his REGISTER (To user) and passed it on");
    clear('bob');

    my $m = $t->request_to('bob');
    is($m && $m->code, 200, "MESSAGE to bob answered by bob's script");
    my ($f) = $t->fetch('bob');
    my $env = read_env('bob');
    ok($env, "bob's script wrote its environment");
    my $regs = $env ? $env->{REGISTRATIONS} : undef;
    ok(defined $regs, 'REGISTRATIONS set for a user with bindings') or diag(join "\n", map { "$_=$env->{$_}" } sort keys %{ $env || {} });
    $regs //= '';
    my @elems = split /,/, $regs;
    is(scalar(@elems), 2, 'REGISTRATIONS holds two comma separated contacts') or diag("REGISTRATIONS=$regs");
    my @bad = grep { !m{^<sip:[^<>]+>;expires=\d+;q=(?:1|0\.\d*[1-9])$} } @elems;
    ok(!@bad, 'each is <uri>;expires=N;q=Q (Contact syntax, as in the 200)') or diag("REGISTRATIONS=$regs");
    my %got = map { m{^<([^>]+)>;expires=(\d+);q=(\S+)$} ? ($1 => { expires => $2, q => $3 }) : () } @elems;
    my %want = SipRegTest::binding_map($f);
    is(join(' ', sort keys %got), join(' ', sort keys %want), 'REGISTRATIONS names the same contacts as the registrar\'s 200')
        or diag("REGISTRATIONS=$regs\n" . SipRegTest::dump_contacts($f));
    for my $u (sort keys %want) {
        next unless $got{$u};
        is($got{$u}{q}, $want{$u}{q}, "REGISTRATIONS q of $u");
        cmp_ok(abs($got{$u}{expires} - $want{$u}{expires}), '<=', 1, "REGISTRATIONS expires of $u ($got{$u}{expires})");
    }
    ok($got{'sip:bob@127.0.0.1:5061'} && $got{'sip:bob@127.0.0.1:5061'}{expires} <= 600
       && $got{'sip:bob@127.0.0.1:5061'}{expires} >= 595
       && $got{'sip:bob-pc@127.0.0.1:5062;transport=tcp'} && $got{'sip:bob-pc@127.0.0.1:5062;transport=tcp'}{expires} >= 1795,
       'REGISTRATIONS: expires 600 and 1800, q 1 and 0.5') or diag("REGISTRATIONS=$regs");

    # carol: no binding -> no REGISTRATIONS; registered and removed -> still none
    $m = $t->request_to('carol');
    is($m && $m->code, 200, "MESSAGE to carol answered by carol's script");
    $env = read_env('carol');
    ok($env && !exists $env->{REGISTRATIONS}, 'REGISTRATIONS absent for a never registered user');
    ok($env && $env->{REQUEST_METHOD} && $env->{REQUEST_METHOD} eq 'MESSAGE', '(the env file is from that run)');
    my $cid = rand_token(10) . '@carol';
    $t->register(user => 'carol', call_id => $cid, cseq => 1, contacts => [ '<sip:carol@127.0.0.1:5063>' ], expires => 600);
    clear('carol');
    $m = $t->request_to('carol', method => 'INFO');
    $env = read_env('carol');
    ok($env && ($env->{REGISTRATIONS} // '') =~ m{^<sip:carol\@127\.0\.0\.1:5063>;expires=(?:599|600);q=1$},
       'carol registered: REGISTRATIONS=<sip:carol@127.0.0.1:5063>;expires=600;q=1')
        or diag('REGISTRATIONS=' . ($env ? $env->{REGISTRATIONS} // '(absent)' : '(no env)'));
    $t->register(user => 'carol', call_id => $cid, cseq => 2, contacts => [ '<sip:carol@127.0.0.1:5063>' ], expires => 0);
    clear('carol');
    $m = $t->request_to('carol', method => 'INFO');
    $env = read_env('carol');
    ok($env && !exists $env->{REGISTRATIONS}, 'binding removed: REGISTRATIONS absent again')
        or diag('REGISTRATIONS=' . ($env ? $env->{REGISTRATIONS} // '(absent)' : '(no env)'));
}

# ---------------------------------------------------------------- display names (R35)
{
    my $r = $t->register(user => 'dan', expires => 600,
                         contacts => [ '"Dan\'s Desk, 2nd floor" <sip:dan@127.0.0.1:5068>;q=0.5', 'Dan Mobile <sip:dan-m@127.0.0.1:5069>' ]);
    is($r && $r->code, 200, 'dan registered two contacts with display names (one quoted with a comma, one tokens)');
    clear('dan');
    my $m = $t->request_to('dan', method => 'INVITE');
    is($m && $m->code, 486, "INVITE to dan answered by dan's script");
    my $env = read_env('dan');
    my $regs = $env ? $env->{REGISTRATIONS} // '' : '';
    like($regs, qr{^Dan Mobile <sip:dan-m\@127\.0\.0\.1:5069>;expires=(?:599|600);q=1,"Dan's Desk, 2nd floor" <sip:dan\@127\.0\.0\.1:5068>;expires=(?:599|600);q=0\.5$},
         'R35: REGISTRATIONS keeps both display names, in Contact syntax, best q first') or diag("REGISTRATIONS=$regs");
    my ($f) = $t->fetch('dan');
    my @c = $f ? $f->headers('contact') : ();
    is(scalar(grep { /^"Dan's Desk, 2nd floor" <sip:dan\@/ || /^Dan Mobile <sip:dan-m\@/ } @c), 2,
       "R35: the registrar's 200 lists them with their display names") or diag(join "\n", @c);
}

# ---------------------------------------------------------------- REGISTRATIONS after expiry
{
    my $t0 = time;
    my $r = $t->register(user => 'short', contacts => [ '<sip:short@127.0.0.1:5067>;expires=2' ]);
    is($r && $r->code, 200, 'short: binding with expires=2 (SipMinExpires 1) -> 200')
        or diag('got ' . ($r ? $r->start_line . ', Min-Expires: ' . ($r->header('min-expires') // '-') : 'nothing'));
    $t->request_to('short');
    my $env = read_env('short');
    ok($env && ($env->{REGISTRATIONS} // '') =~ m{^<sip:short\@127\.0\.0\.1:5067>;expires=[12];q=1$},
       'short: REGISTRATIONS lists the 2 s binding at once')
        or diag('REGISTRATIONS=' . ($env ? $env->{REGISTRATIONS} // '(absent)' : '(no env)'));
    sleep 3.1 - (time - $t0) if time - $t0 < 3.1;
    clear('short');
    $t->request_to('short');
    $env = read_env('short');
    ok($env && !exists $env->{REGISTRATIONS}, 'short: 3 s later REGISTRATIONS is absent (binding expired)')
        or diag('REGISTRATIONS=' . ($env ? $env->{REGISTRATIONS} // '(absent)' : '(no env)'));
}

# ---------------------------------------------------------------- REGISTER through a script
sub reg_via_script {
    my ($user, %o) = @_;
    return $t->register(user => $user, uri => "sip:$user\@127.0.0.1:$port", %o);
}

{
    # script answers 200 itself -> no binding
    my $r = reg_via_script('reg200', contacts => [ '<sip:reg200@127.0.0.1:5064>' ], expires => 600);
    is($r && $r->code, 200, 'REGISTER sip:reg200@127.0.0.1: the script answers 200');
    is_deeply([ runs('reg200') ], [ 'REGISTER' ], '... the script ran once, for the REGISTER');
    is(scalar(() = $r ? $r->headers('contact') : ()), 0, "... the 200 is the script's (no Contact)");
    my ($f, %b) = $t->fetch('reg200');
    is(scalar(keys %b), 0, 'script answered 200 -> no binding stored') or diag(SipRegTest::dump_contacts($f));

    # script with no output -> default action: the registrar stores the binding
    my $cid = rand_token(10) . '@regnone';
    $r = reg_via_script('regnone', call_id => $cid, cseq => 1, contacts => [ '<sip:regnone@127.0.0.1:5065>;q=0.8' ], expires => 600);
    is($r && $r->code, 200, 'REGISTER sip:regnone@127.0.0.1: script without output -> 200 (default action)');
    is_deeply([ runs('regnone') ], [ 'REGISTER' ], '... the script ran');
    SipRegTest::bindings_are({ SipRegTest::binding_map($r) }, { 'sip:regnone@127.0.0.1:5065' => [ 599, 600, '0.8' ] },
                             "... the 200 is the registrar's, listing the binding", $r);
    # read the env first: the fetch (a REGISTER for regnone) runs the script again
    my $env = read_env('regnone');
    ok($env && !exists $env->{REGISTRATIONS}, 'first REGISTER: the script saw no REGISTRATIONS (nothing bound yet)');
    ($f, %b) = $t->fetch('regnone');
    ok($b{'sip:regnone@127.0.0.1:5065'}, 'script with empty output -> binding stored') or diag(SipRegTest::dump_contacts($f));
    $r = reg_via_script('regnone', call_id => $cid, cseq => 2, contacts => [ '<sip:regnone@127.0.0.1:5065>;q=0.8' ], expires => 900);
    is($r && $r->code, 200, 'refresh through the script -> 200');
    $env = read_env('regnone');
    ok($env && ($env->{REGISTRATIONS} // '') =~ m{^<sip:regnone\@127\.0\.0\.1:5065>;expires=\d+;q=0\.8$},
       'refresh: the script saw the existing binding in REGISTRATIONS')
        or diag('REGISTRATIONS=' . ($env ? $env->{REGISTRATIONS} // '(absent)' : '(no env)'));
    ($f, %b) = $t->fetch('regnone');
    ok(($b{'sip:regnone@127.0.0.1:5065'} // {})->{expires} // 0 >= 899, 'refresh stored by the default action (900 s)')
        or diag(SipRegTest::dump_contacts($f));

    # script answers 403 -> no binding
    $r = reg_via_script('reg403', contacts => [ '<sip:reg403@127.0.0.1:5066>' ], expires => 600);
    is($r && $r->code, 403, 'REGISTER sip:reg403@127.0.0.1: the script answers 403');
    is_deeply([ runs('reg403') ], [ 'REGISTER' ], '... the script ran once');
    ($f, %b) = $t->fetch('reg403');
    is(scalar(keys %b), 0, 'script answered 403 -> no binding stored') or diag(SipRegTest::dump_contacts($f));
    $r = $t->request_to('reg403', method => 'OPTIONS');
    ok($r, 'server still answers');

    # the standard form (Request-URI = the domain) is not the script's business
    clear('reg403');
    $r = $t->register(user => 'reg403', contacts => [ '<sip:reg403@127.0.0.1:5066>' ], expires => 600);
    note('REGISTER sip:127.0.0.1 (domain Request-URI) for a user with a 403 script: '
         . ($r ? $r->code : 'no answer') . ', script runs: ' . scalar(runs('reg403')));
}

# ---------------------------------------------------------------- default action -> location service
{
    my $uas = $t->udp_socket;
    my $contact = 'sip:fwd-phone@127.0.0.1:' . $uas->sockport;
    my $r = $t->register(user => 'fwd', contacts => [ "<$contact>" ], expires => 600);
    is($r && $r->code, 200, 'fwd registered a contact (a raw UDP socket)');
    clear('fwd');
    my $c = $t->udp_socket;
    my $req = $t->sip_request(method => 'MESSAGE', uri => $t->aor('fwd'), sock => $c, body => 'hello',
                              content_type => 'text/plain');
    $t->udp_send($req, sock => $c);
    my $got = $t->udp_recv($uas, 10);
    my $m = parse_msg($got);
    ok($m && !$m->is_response && $m->method eq 'MESSAGE', "script without output -> default action: MESSAGE proxied to fwd's contact");
    is($m && $m->uri, $contact, '... with the contact as Request-URI');
    is($m && $m->body, 'hello', '... and the body');
    is_deeply([ runs('fwd') ], [ 'MESSAGE' ], "... after fwd's script ran");
    my $env = read_env('fwd');
    ok($env && ($env->{REGISTRATIONS} // '') =~ m{^<\Q$contact\E>;expires=\d+;q=1$}, '... which saw the binding in REGISTRATIONS')
        or diag('REGISTRATIONS=' . ($env ? $env->{REGISTRATIONS} // '(absent)' : '(no env)'));
    if ($m) {
        my $resp = "SIP/2.0 200 OK\r\n"
            . join('', map { "Via: $_\r\n" } $m->headers('via'))
            . 'From: ' . $m->header('from') . "\r\n"
            . 'To: ' . $m->header('to') . ";tag=uas1\r\n"
            . 'Call-ID: ' . $m->header('call-id') . "\r\n"
            . 'CSeq: ' . $m->header('cseq') . "\r\n"
            . "Content-Length: 0\r\n\r\n";
        $t->udp_send($resp, sock => $uas);
    }
    my $final;
    wait_until(5, sub {
        my $d = $t->udp_recv($c, 0.2) // return 0;
        my $x = parse_msg($d);
        $final = $x if $x->is_final;
        return $final ? 1 : 0;
    });
    is($final && $final->code, 200, "the contact's 200 reaches the caller");
}

ok($t->options_ok('udp'), 'server still answers OPTIONS');
$t->dump_log_on_failure;
$t->stop;
done_testing;

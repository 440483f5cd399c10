#!/usr/bin/perl
# Per-user forwarding files (issue 15 item 4; seed 002 §7.3), like
# sendmail's .forward: SipForwardFile with %u in a directory of ours.
# An addresses file proxies the INVITE to all of them in parallel; an
# unsafe file (group- or other-writable, a symlink, too big, someone
# else's) is refused with a log line and the normal handling answers; a
# "|program" line runs the program as a SIP-CGI script (its answer, its
# arguments); from a file owned by httpd's user as httpd, never from a
# file of root's, and never a program others may write (files of other
# users run as their owner: t/forward-owner.t).
use strict;
use warnings;
use Test::More;
use SipCgiTest qw(parse_msg rand_token);

my $t = SipCgiTest->new(start => 0);
my $port = $t->sip_port;
my $us = "127.0.0.1:$port";
my $dir = $t->dir . '/fwd';
mkdir $dir or die "mkdir $dir: $!";
chmod 0755, $dir;
my $root = $> == 0;
# the engine's user: www-data when the tests run as root (SipTest), else ours
my $engine_uid = $root ? (getpwnam('www-data'))[2] : $>;

my ($pa, $pb, $pg) = ($t->peer(name => 'a'), $t->peer(name => 'b'), $t->peer(name => 'g'));

sub put {
    my ($name, $text, $mode, $uid) = @_;
    my $f = "$dir/$name";
    unlink $f;
    open(my $fh, '>', $f) or die "write $f: $!";
    print $fh $text;
    close $fh;
    chmod $mode // 0644, $f;
    chown $uid, -1, $f if defined $uid;
    return $f;
}

my $addrs = "# alice is away\n" . $pa->uri('alice') . ", " . $pb->uri('alice') . "\n";
put('alice', $addrs);
put('gus', $pa->uri('gus') . "\n", 0664);               # group-writable
put('olga', $pa->uri('olga') . "\n", 0646);             # other-writable
symlink("$dir/alice", "$dir/sam") or die "symlink: $!"; # a symlink to a good file
put('big', ('#' x 70000) . "\n" . $pa->uri('big') . "\n");
put('nora', $pa->uri('nora') . "\n", 0644, 65534) if $root;   # someone else's (nobody)
put('many', join("\n", map { $pa->uri("m$_") } 1 .. 4) . "\n");  # over SipListMaxMembers 3

# |program: a SIP-CGI script that answers 486 and shows its arguments
my $prog = "$dir/vacation.sh";
put('vacation.sh', "#!/bin/sh\nprintf 'SIP/2.0 486 Busy Here\\nX-Vacation: %s %s\\n\\n' \"\$1\" \"\$2\"\n", 0755);
put('vic', "# on vacation\n|$prog away until-monday\n", 0644, $engine_uid);
put('wgw', "|$dir/gw.sh\n", 0644, $engine_uid);          # a program others may write
put('gw.sh', "#!/bin/sh\nprintf 'SIP/2.0 486 Busy Here\\n\\n'\n", 0777);
put('rel', "|vacation.sh\n", 0644, $engine_uid);         # not an absolute path
put('root', "|$prog\n", 0644, 0) if $root;               # a root-owned file: not httpd's user

$t->{vhost_conf} = "SipForwardFile \@DIR\@/fwd/%u\nSipListMaxMembers 3";
$t->start;

sub register {
    my ($user, $contact) = @_;
    my @x = $t->transact('udp', method => 'REGISTER', uri => "sip:$us", to => "<sip:$user\@$us>",
                         from => "<sip:$user\@$us>;tag=" . rand_token(6), call_id => rand_token(12) . '@reg',
                         cseq => 1, headers => [ Contact => "<$contact>" ]);
    return @x && $x[-1]->code == 200;
}

my $uac = $t->peer(name => 'uac');

# ---- addresses: proxied to both in parallel
{
    my $inv = $uac->invite(uri => "sip:alice\@$us");
    my $cid = $uac->call_id($inv);
    my $ia = $pa->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    my $ib = $pb->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    ok($ia && $ib, 'addresses file: the INVITE reaches both addresses');
    is($ia && $ia->uri, $pa->uri('alice'), '... with the address as Request-URI');
    $pb->reply($ib, 180) if $ib;
    $pa->reply($ia, 200, body => "v=0\r\n", content_type => 'application/sdp') if $ia;
    my $fin = $uac->final_for($inv, 3);
    is($fin && $fin->code, 200, '... the first 200 reaches the caller');
    my $cb = $pb->expect(method => 'CANCEL', call_id => $cid, timeout => 3);
    ok($cb, '... and the other address gets CANCEL');
    if ($cb) { $pb->reply($cb, 200); $pb->reply($ib, 487) }
    $uac->ack($inv, $fin) if $fin;
}

# ---- unsafe files: refused, logged, the normal handling answers
my @unsafe = ([ 'gus', qr/writable by group or others/, 'a group-writable file' ],
              [ 'olga', qr/writable by group or others/, 'an other-writable file' ],
              [ 'sam', qr/symbolic link/, 'a symlink' ],
              [ 'big', qr/larger than 64 KiB/, 'a file over 64 KiB' ],
              [ 'many', qr/more than 3 addresses \(SipListMaxMembers\)/, 'a file over SipListMaxMembers' ]);
push @unsafe, [ 'nora', qr/owned by uid 65534, not by its user/, 'a file of someone else' ] if $root;
for my $case (@unsafe) {
    my ($user, $why, $what) = @$case;
    ok(register($user, $pg->uri($user)), "$user registers a phone");
    my $mark = $t->log_mark;
    my $inv = $uac->invite(uri => "sip:$user\@$us");
    my $cid = $uac->call_id($inv);
    my $ig = $pg->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    ok($ig, "$what is refused: the registered phone gets the call");
    ok(!$pa->expect(method => 'INVITE', call_id => $cid, timeout => 0.3), '... not the file\'s address');
    ok(grep({ m{forwarding file \Q$dir/$user\E refused for INVITE .*$why} } $t->log_since($mark)),
       '... and the refusal is logged') or diag(join '', $t->log_since($mark));
    $pg->reply($ig, 486) if $ig;
    my $fin = $uac->final_for($inv, 3);
    $uac->ack($inv, $fin) if $fin;
}

# ---- |program
{
    my $inv = $uac->invite(uri => "sip:vic\@$us");
    my $fin = $uac->final_for($inv, 5);
    is($fin && $fin->code, 486, '|program: the program\'s SIP-CGI answer comes back');
    is($fin && $fin->header('x-vacation'), 'away until-monday', '... and it got its arguments');
    $uac->ack($inv, $fin) if $fin;
}
my @bad_prog = ([ 'wgw', qr/is writable by group or others/, 'a program others may write' ],
                [ 'rel', qr/needs an absolute path/, 'a relative program path' ]);
# a file of root's: its program would run as root (t/forward-owner.t has
# the files of other users, run as their owner)
push @bad_prog, [ 'root', qr/it would run as root/, 'a file of root\'s' ]
    if $root;
for my $case (@bad_prog) {
    my ($user, $why, $what) = @$case;
    my $mark = $t->log_mark;
    my $inv = $uac->invite(uri => "sip:$user\@$us");
    my $fin = $uac->final_for($inv, 3);
    is($fin && $fin->code, 404, "|program refused for $what: the normal handling answers (404)");
    ok(grep({ m{forwarding file \Q$dir/$user\E refused .*$why} } $t->log_since($mark)), '... logged')
        or diag(join '', $t->log_since($mark));
    $uac->ack($inv, $fin) if $fin;
}

# ---- no file: nothing changes; an unsafe user name is no file name
{
    my $inv = $uac->invite(uri => "sip:nofile\@$us");
    my $fin = $uac->final_for($inv, 3);
    is($fin && $fin->code, 404, 'a user without a file: the normal handling (404)');
    $uac->ack($inv, $fin) if $fin;
    $inv = $uac->invite(uri => "sip:..%2Falice\@$us");
    $fin = $uac->final_for($inv, 3);
    ok($fin && $fin->code != 200 && !$pa->expect(method => 'INVITE', call_id => $uac->call_id($inv), timeout => 0.3),
       'a user name that is not a safe file name reads no file');
    $uac->ack($inv, $fin) if $fin;
}
$t->stop;

# ---- templates apache2 -t refuses
for my $case ([ '/srv/fwd/all', qr/an absolute path needs %u/ ], [ 'fwd/%u', qr/needs ~\/name or an absolute path/ ],
              [ '~/', qr/names a file in the user's home directory/ ]) {
    my ($tmpl, $re) = @$case;
    my $bad = SipCgiTest->new(start => 0, vhost_conf => "SipForwardFile $tmpl");
    $bad->write_conf;
    my ($rc, $out) = $bad->_run_apache('-t');
    ok($rc != 0 && $out =~ $re, "SipForwardFile $tmpl is a configuration error") or diag($out);
}
done_testing;

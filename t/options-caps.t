#!/usr/bin/perl
# What the server says it can do (sip_options.c): OPTIONS to an address
# with SipExplode On lists EXPLODE in Allow and recipient-list-message in
# Supported (RFC 5365 §6, EX-27), elsewhere neither; the 501 for an
# unknown method carries the same Allow; never recipient-list-invite.
# <Limit EXPLODE> is accepted (EXPLODE is a registered httpd method).
use strict;
use warnings;
use Test::More;
use SipTest;

my $MODDIR = '/usr/lib/apache2/modules';
my $t = SipTest->new(
    server_conf => join("\n",
        "LoadModule authn_core_module $MODDIR/mod_authn_core.so",
        "LoadModule authn_file_module $MODDIR/mod_authn_file.so",
        "LoadModule authz_user_module $MODDIR/mod_authz_user.so"),
    vhost_conf => join("\n",
        '<Location "/list@127.0.0.1">',
        '    SipExplode On',
        '    AuthName "caps"',
        '    AuthUserFile @DIR@/users.htdigest',
        '    <Limit EXPLODE>',
        '        Require user alice',
        '    </Limit>',
        '</Location>'),
    setup => sub {
        my $self = shift;
        open my $fh, '>', "$self->{dir}/users.htdigest" or die $!;
        close $fh;
    });
my $port = $t->sip_port;
ok($t->httpd_pid, 'apache2 -t accepts <Limit EXPLODE> and the server runs');

sub ask {
    my (%a) = @_;
    my $s = $t->udp_socket;
    my $req = $t->sip_request(%a, sock => $s);
    my @r = $t->udp_req($req, 3, sock => $s);
    return @r ? $r[-1] : undef;
}
sub elems { my ($m, $h) = @_; return $m ? (map { s/^\s+|\s+$//gr } $m->header_elems($h)) : () }

my $on  = "sip:list\@127.0.0.1:$port";
my $off = "sip:bob\@127.0.0.1:$port";

my $m = ask(method => 'OPTIONS', uri => $on);
is($m && $m->code, 200, 'OPTIONS to the list address -> 200');
my @allow_on = elems($m, 'allow');
ok((grep { $_ eq 'EXPLODE' } @allow_on), 'SipExplode On: Allow has EXPLODE') or diag("Allow: @allow_on");
ok((grep { $_ eq 'MESSAGE' } @allow_on), 'Allow has MESSAGE');
my @sup = elems($m, 'supported');
ok((grep { $_ eq 'recipient-list-message' } @sup), 'SipExplode On: Supported has recipient-list-message')
    or diag("Supported: @sup");
ok(!(grep { $_ eq 'recipient-list-invite' } @sup), 'recipient-list-invite never advertised');

$m = ask(method => 'OPTIONS', uri => $off);
is($m && $m->code, 200, 'OPTIONS to another address -> 200');
my @allow_off = elems($m, 'allow');
ok(@allow_off && !(grep { $_ eq 'EXPLODE' } @allow_off), 'SipExplode Off: no EXPLODE in Allow')
    or diag("Allow: @allow_off");
ok(!(grep { /recipient-list/ } elems($m, 'supported')), 'SipExplode Off: no recipient-list tag');
is_deeply([grep { $_ ne 'EXPLODE' } @allow_on], \@allow_off,
          'the lists differ only by EXPLODE');

# RFC 3261 §21.5.2: the 501 says what the server does accept, the same list
$m = ask(method => 'FOOBAR', uri => $off);
is($m && $m->code, 501, 'unknown method -> 501');
is_deeply([elems($m, 'allow')], \@allow_off, '501 Allow is the OPTIONS Allow (Off)');
$m = ask(method => 'FOOBAR', uri => $on);
is($m && $m->code, 501, 'unknown method to the list address -> 501');
is_deeply([elems($m, 'allow')], \@allow_on, '501 Allow is the OPTIONS Allow (On)');

# RFC 5366 is not offered: a recipient-list INVITE/MESSAGE tag the
# server does not support is refused before anything else (RFC 3261 §8.2.2.3)
$m = ask(method => 'MESSAGE', uri => $off, headers => [Require => 'recipient-list-invite']);
is($m && $m->code, 420, 'Require: recipient-list-invite -> 420');
is($m && $m->header('unsupported'), 'recipient-list-invite', 'Unsupported: recipient-list-invite');
$m = ask(method => 'MESSAGE', uri => $off, headers => [Require => 'foo, recipient-list-message']);
is($m && $m->code, 420, 'Require: foo, recipient-list-message with SipExplode Off -> 420');
is_deeply([sort(elems($m, 'unsupported'))], [qw(foo recipient-list-message)],
          'Unsupported lists both tags');

done_testing;

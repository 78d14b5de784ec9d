# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_popfetch_global_optspecs
    string join \n c/config= log-format= v/verbose q/quiet h/help V/version
end

function __fish_popfetch_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_popfetch_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_popfetch_using_subcommand
    set -l cmd (__fish_popfetch_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c popfetch -n "__fish_popfetch_needs_command" -s c -l config -d 'Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_needs_command" -l log-format -d 'How -v, warnings and errors are written: text, or one JSON object a line (for log collectors); the daemon\'s log too' -r -f -a "text\t''
json\t''"
complete -c popfetch -n "__fish_popfetch_needs_command" -s v -l verbose -d 'Print the protocol steps (never passwords) and a summary per account'
complete -c popfetch -n "__fish_popfetch_needs_command" -s q -l quiet -d 'Print nothing but errors'
complete -c popfetch -n "__fish_popfetch_needs_command" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_needs_command" -s V -l version -d 'Print version'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "sync" -d 'Fetch new mail for the named accounts, or for all of them'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "list" -d 'List the messages on the server with what a sync would do with each'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "accounts" -d 'List the configured accounts'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "adopt" -d 'Record the messages on the server as delivered without downloading them, to start from now on a mailbox already read elsewhere'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "import-state" -d 'Record the messages another fetcher already delivered, so switching tools does not fetch a mailbox again'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "import-config" -d 'Convert fetchmail\'s, mpop\'s or getmail\'s configuration into popfetch\'s: printed, or with --write written to the configuration file (mode 0600, never over an existing one); what does not map is kept as comments'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "init" -d 'Write a commented configuration file (asks for what is not given, at a terminal; never overwrites)'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "probe" -d 'Connect to a server and show what it offers: greeting, capabilities, TLS, certificate (with its fingerprint) and login methods'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "password" -d 'Manage an account\'s password in the system keyring (service "popfetch", entry USER@HOST)'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "daemon" -d 'Poll the named accounts, or all of them, every poll_interval until stopped: SIGUSR1 polls now, SIGHUP reloads the configuration, SIGTERM stops'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "status" -d 'What each account\'s last run did (from cron, by hand or the daemon): its time, result and exit code, the last success, the messages delivered and known, and the daemon\'s next poll'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "oauth" -d 'Log an account in to its OAuth provider once, show its tokens\' state, or log it out (oauth_provider in the configuration)'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "complete-accounts" -d 'Account names, one a line, for the shell completions'
complete -c popfetch -n "__fish_popfetch_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c popfetch -n "__fish_popfetch_using_subcommand sync" -s j -l jobs -d 'How many accounts to sync at once [default: four per CPU, at least 8, at most 32]' -r
complete -c popfetch -n "__fish_popfetch_using_subcommand sync" -s c -l config -d 'Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand sync" -l log-format -d 'How -v, warnings and errors are written: text, or one JSON object a line (for log collectors); the daemon\'s log too' -r -f -a "text\t''
json\t''"
complete -c popfetch -n "__fish_popfetch_using_subcommand sync" -l dry-run -d 'Print what would be fetched, skipped and deleted, and change nothing'
complete -c popfetch -n "__fish_popfetch_using_subcommand sync" -l json -d 'Print a JSON summary of each account on stdout (with --dry-run, the plan too)'
complete -c popfetch -n "__fish_popfetch_using_subcommand sync" -s v -l verbose -d 'Print the protocol steps (never passwords) and a summary per account'
complete -c popfetch -n "__fish_popfetch_using_subcommand sync" -s q -l quiet -d 'Print nothing but errors'
complete -c popfetch -n "__fish_popfetch_using_subcommand sync" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_using_subcommand list" -s c -l config -d 'Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand list" -l log-format -d 'How -v, warnings and errors are written: text, or one JSON object a line (for log collectors); the daemon\'s log too' -r -f -a "text\t''
json\t''"
complete -c popfetch -n "__fish_popfetch_using_subcommand list" -l json -d 'Print JSON instead of a table (dates in RFC 3339, sizes in server octets)'
complete -c popfetch -n "__fish_popfetch_using_subcommand list" -s v -l verbose -d 'Print the protocol steps (never passwords) and a summary per account'
complete -c popfetch -n "__fish_popfetch_using_subcommand list" -s q -l quiet -d 'Print nothing but errors'
complete -c popfetch -n "__fish_popfetch_using_subcommand list" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_using_subcommand accounts" -s c -l config -d 'Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand accounts" -l log-format -d 'How -v, warnings and errors are written: text, or one JSON object a line (for log collectors); the daemon\'s log too' -r -f -a "text\t''
json\t''"
complete -c popfetch -n "__fish_popfetch_using_subcommand accounts" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_using_subcommand adopt" -l before -d 'Only those whose Date: is before DATE (2024-06-01, midnight UTC, or an RFC 3339 time); read with TOP n 0, pipelined' -r
complete -c popfetch -n "__fish_popfetch_using_subcommand adopt" -s c -l config -d 'Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand adopt" -l log-format -d 'How -v, warnings and errors are written: text, or one JSON object a line (for log collectors); the daemon\'s log too' -r -f -a "text\t''
json\t''"
complete -c popfetch -n "__fish_popfetch_using_subcommand adopt" -l all -d 'Every message on the server now'
complete -c popfetch -n "__fish_popfetch_using_subcommand adopt" -s y -l yes -d 'Record without asking (needed where there is no terminal)'
complete -c popfetch -n "__fish_popfetch_using_subcommand adopt" -s n -l dry-run -d 'Show what would be recorded, and record nothing'
complete -c popfetch -n "__fish_popfetch_using_subcommand adopt" -s v -l verbose -d 'Print the protocol steps (never passwords) and a summary per account'
complete -c popfetch -n "__fish_popfetch_using_subcommand adopt" -s q -l quiet -d 'Print nothing but errors'
complete -c popfetch -n "__fish_popfetch_using_subcommand adopt" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_using_subcommand import-state" -l from -d 'The tool that wrote the file' -r -f -a "fetchmail\t''
mpop\t''
getmail\t''"
complete -c popfetch -n "__fish_popfetch_using_subcommand import-state" -l key -d 'Take the messages the file holds for this mailbox instead of the account\'s own user@host (fetchmail and mpop files hold several)' -r
complete -c popfetch -n "__fish_popfetch_using_subcommand import-state" -s c -l config -d 'Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand import-state" -l log-format -d 'How -v, warnings and errors are written: text, or one JSON object a line (for log collectors); the daemon\'s log too' -r -f -a "text\t''
json\t''"
complete -c popfetch -n "__fish_popfetch_using_subcommand import-state" -s q -l quiet -d 'Print nothing but errors'
complete -c popfetch -n "__fish_popfetch_using_subcommand import-state" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_using_subcommand import-config" -l from -d 'The tool that wrote the file' -r -f -a "fetchmail\t''
mpop\t''
getmail\t''"
complete -c popfetch -n "__fish_popfetch_using_subcommand import-config" -s c -l config -d 'Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand import-config" -l log-format -d 'How -v, warnings and errors are written: text, or one JSON object a line (for log collectors); the daemon\'s log too' -r -f -a "text\t''
json\t''"
complete -c popfetch -n "__fish_popfetch_using_subcommand import-config" -l write -d 'Write it to the configuration file (-c FILE, or the default path), passwords included, instead of printing it without them'
complete -c popfetch -n "__fish_popfetch_using_subcommand import-config" -l import-state -d 'Then record each account\'s seen messages from the tool\'s UID file (.fetchids or idfile, mpop\'s uidls_file, getmail\'s oldmail-*), so the first sync fetches nothing again; the accounts must be in the configuration (--write, or already there)'
complete -c popfetch -n "__fish_popfetch_using_subcommand import-config" -s q -l quiet -d 'Print nothing but errors'
complete -c popfetch -n "__fish_popfetch_using_subcommand import-config" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_using_subcommand init" -l host -d 'The POP3 server\'s host name, without a port' -r
complete -c popfetch -n "__fish_popfetch_using_subcommand init" -l port -d 'The server\'s port [default: 995 with implicit TLS, else 110]' -r
complete -c popfetch -n "__fish_popfetch_using_subcommand init" -l tls -d 'How to secure the connection [default: implicit]' -r -f -a "implicit\t'TLS from the first byte, port 995 by default'
starttls\t'plain POP3 upgraded with STLS, never falling back, port 110 by default'
none\t'no TLS at all'"
complete -c popfetch -n "__fish_popfetch_using_subcommand init" -l user -d 'The login name on the server' -r
complete -c popfetch -n "__fish_popfetch_using_subcommand init" -l deliver -d 'Where mail goes: maildir:PATH, mbox:PATH or mda:COMMAND ARGS; a bare path is a Maildir, and a path must be absolute or start with ~/' -r
complete -c popfetch -n "__fish_popfetch_using_subcommand init" -s c -l config -d 'Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand init" -l log-format -d 'How -v, warnings and errors are written: text, or one JSON object a line (for log collectors); the daemon\'s log too' -r -f -a "text\t''
json\t''"
complete -c popfetch -n "__fish_popfetch_using_subcommand init" -l keep -d 'Leave messages on the server after delivery (asked at a terminal otherwise)'
complete -c popfetch -n "__fish_popfetch_using_subcommand init" -s q -l quiet -d 'Print nothing but errors'
complete -c popfetch -n "__fish_popfetch_using_subcommand init" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c popfetch -n "__fish_popfetch_using_subcommand probe" -l host -d 'A server to probe without an account' -r
complete -c popfetch -n "__fish_popfetch_using_subcommand probe" -l port -d 'The port [default: 995 with implicit TLS, else 110]' -r
complete -c popfetch -n "__fish_popfetch_using_subcommand probe" -l tls -d 'How to secure the connection' -r -f -a "implicit\t'TLS from the first byte, port 995 by default'
starttls\t'plain POP3 upgraded with STLS, never falling back, port 110 by default'
none\t'no TLS at all'"
complete -c popfetch -n "__fish_popfetch_using_subcommand probe" -l tls-ca-file -d 'Also trust the CA certificates in FILE (PEM), as tls_ca_file does' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand probe" -s c -l config -d 'Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand probe" -l log-format -d 'How -v, warnings and errors are written: text, or one JSON object a line (for log collectors); the daemon\'s log too' -r -f -a "text\t''
json\t''"
complete -c popfetch -n "__fish_popfetch_using_subcommand probe" -s v -l verbose -d 'Print the protocol steps (never passwords) and a summary per account'
complete -c popfetch -n "__fish_popfetch_using_subcommand probe" -s q -l quiet -d 'Print nothing but errors'
complete -c popfetch -n "__fish_popfetch_using_subcommand probe" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c popfetch -n "__fish_popfetch_using_subcommand password; and not __fish_seen_subcommand_from set delete help" -s c -l config -d 'Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand password; and not __fish_seen_subcommand_from set delete help" -l log-format -d 'How -v, warnings and errors are written: text, or one JSON object a line (for log collectors); the daemon\'s log too' -r -f -a "text\t''
json\t''"
complete -c popfetch -n "__fish_popfetch_using_subcommand password; and not __fish_seen_subcommand_from set delete help" -s q -l quiet -d 'Print nothing but errors'
complete -c popfetch -n "__fish_popfetch_using_subcommand password; and not __fish_seen_subcommand_from set delete help" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_using_subcommand password; and not __fish_seen_subcommand_from set delete help" -f -a "set" -d 'Store the password: prompted for on a terminal, else read from stdin'
complete -c popfetch -n "__fish_popfetch_using_subcommand password; and not __fish_seen_subcommand_from set delete help" -f -a "delete" -d 'Remove the stored password'
complete -c popfetch -n "__fish_popfetch_using_subcommand password; and not __fish_seen_subcommand_from set delete help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c popfetch -n "__fish_popfetch_using_subcommand password; and __fish_seen_subcommand_from set" -s c -l config -d 'Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand password; and __fish_seen_subcommand_from set" -l log-format -d 'How -v, warnings and errors are written: text, or one JSON object a line (for log collectors); the daemon\'s log too' -r -f -a "text\t''
json\t''"
complete -c popfetch -n "__fish_popfetch_using_subcommand password; and __fish_seen_subcommand_from set" -l target -d 'The password of the delivery target\'s login instead (an IMAP server, or an SMTP server with smtp_user), entry USER@HOST of that server'
complete -c popfetch -n "__fish_popfetch_using_subcommand password; and __fish_seen_subcommand_from set" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_using_subcommand password; and __fish_seen_subcommand_from delete" -s c -l config -d 'Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand password; and __fish_seen_subcommand_from delete" -l log-format -d 'How -v, warnings and errors are written: text, or one JSON object a line (for log collectors); the daemon\'s log too' -r -f -a "text\t''
json\t''"
complete -c popfetch -n "__fish_popfetch_using_subcommand password; and __fish_seen_subcommand_from delete" -l target -d 'The delivery target\'s password instead'
complete -c popfetch -n "__fish_popfetch_using_subcommand password; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_using_subcommand password; and __fish_seen_subcommand_from help" -f -a "set" -d 'Store the password: prompted for on a terminal, else read from stdin'
complete -c popfetch -n "__fish_popfetch_using_subcommand password; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Remove the stored password'
complete -c popfetch -n "__fish_popfetch_using_subcommand password; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c popfetch -n "__fish_popfetch_using_subcommand daemon" -s j -l jobs -d 'How many accounts to sync at once [default: four per CPU, at least 8, at most 32]' -r
complete -c popfetch -n "__fish_popfetch_using_subcommand daemon" -s c -l config -d 'Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand daemon" -l log-format -d 'How -v, warnings and errors are written: text, or one JSON object a line (for log collectors); the daemon\'s log too' -r -f -a "text\t''
json\t''"
complete -c popfetch -n "__fish_popfetch_using_subcommand daemon" -l foreground -d 'Stay in the foreground and log to stderr (for systemd and containers); otherwise detach and log to $XDG_STATE_HOME/popfetch/daemon.log'
complete -c popfetch -n "__fish_popfetch_using_subcommand daemon" -s v -l verbose -d 'Print the protocol steps (never passwords) and a summary per account'
complete -c popfetch -n "__fish_popfetch_using_subcommand daemon" -s q -l quiet -d 'Print nothing but errors'
complete -c popfetch -n "__fish_popfetch_using_subcommand daemon" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_using_subcommand status" -s c -l config -d 'Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand status" -l log-format -d 'How -v, warnings and errors are written: text, or one JSON object a line (for log collectors); the daemon\'s log too' -r -f -a "text\t''
json\t''"
complete -c popfetch -n "__fish_popfetch_using_subcommand status" -l json -d 'Print JSON instead of a line per account'
complete -c popfetch -n "__fish_popfetch_using_subcommand status" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and not __fish_seen_subcommand_from login status logout help" -s c -l config -d 'Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and not __fish_seen_subcommand_from login status logout help" -l log-format -d 'How -v, warnings and errors are written: text, or one JSON object a line (for log collectors); the daemon\'s log too' -r -f -a "text\t''
json\t''"
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and not __fish_seen_subcommand_from login status logout help" -s q -l quiet -d 'Print nothing but errors'
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and not __fish_seen_subcommand_from login status logout help" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and not __fish_seen_subcommand_from login status logout help" -f -a "login" -d 'Log in once: shows a code to enter at the provider\'s page (the device flow), or with --browser signs in through a browser on this machine'
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and not __fish_seen_subcommand_from login status logout help" -f -a "status" -d 'Show whether a refresh token is stored and when the access token expires; exits 77 when an account needs a login'
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and not __fish_seen_subcommand_from login status logout help" -f -a "logout" -d 'Revoke the grant where the provider can, and forget the tokens'
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and not __fish_seen_subcommand_from login status logout help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and __fish_seen_subcommand_from login" -s c -l config -d 'Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and __fish_seen_subcommand_from login" -l log-format -d 'How -v, warnings and errors are written: text, or one JSON object a line (for log collectors); the daemon\'s log too' -r -f -a "text\t''
json\t''"
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and __fish_seen_subcommand_from login" -l browser -d 'Sign in through a browser and a redirect to this machine (the authorization code with PKCE) instead of entering a code'
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and __fish_seen_subcommand_from login" -l import -d 'Take over a refresh token another tool holds instead of logging in: read from stdin, the token alone on a line or a JSON object with "refresh_token" (getmail\'s token file, mutt_oauth2.py\'s decrypted one); it is tried once, then stored'
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and __fish_seen_subcommand_from login" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and __fish_seen_subcommand_from status" -s c -l config -d 'Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and __fish_seen_subcommand_from status" -l log-format -d 'How -v, warnings and errors are written: text, or one JSON object a line (for log collectors); the daemon\'s log too' -r -f -a "text\t''
json\t''"
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and __fish_seen_subcommand_from logout" -s c -l config -d 'Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and __fish_seen_subcommand_from logout" -l log-format -d 'How -v, warnings and errors are written: text, or one JSON object a line (for log collectors); the daemon\'s log too' -r -f -a "text\t''
json\t''"
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and __fish_seen_subcommand_from logout" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and __fish_seen_subcommand_from help" -f -a "login" -d 'Log in once: shows a code to enter at the provider\'s page (the device flow), or with --browser signs in through a browser on this machine'
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and __fish_seen_subcommand_from help" -f -a "status" -d 'Show whether a refresh token is stored and when the access token expires; exits 77 when an account needs a login'
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and __fish_seen_subcommand_from help" -f -a "logout" -d 'Revoke the grant where the provider can, and forget the tokens'
complete -c popfetch -n "__fish_popfetch_using_subcommand oauth; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c popfetch -n "__fish_popfetch_using_subcommand complete-accounts" -s c -l config -d 'Configuration file [default: $XDG_CONFIG_HOME/popfetch/config.toml]' -r -F
complete -c popfetch -n "__fish_popfetch_using_subcommand complete-accounts" -l log-format -d 'How -v, warnings and errors are written: text, or one JSON object a line (for log collectors); the daemon\'s log too' -r -f -a "text\t''
json\t''"
complete -c popfetch -n "__fish_popfetch_using_subcommand complete-accounts" -s h -l help -d 'Print help'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from sync list accounts adopt import-state import-config init probe password daemon status oauth complete-accounts help" -f -a "sync" -d 'Fetch new mail for the named accounts, or for all of them'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from sync list accounts adopt import-state import-config init probe password daemon status oauth complete-accounts help" -f -a "list" -d 'List the messages on the server with what a sync would do with each'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from sync list accounts adopt import-state import-config init probe password daemon status oauth complete-accounts help" -f -a "accounts" -d 'List the configured accounts'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from sync list accounts adopt import-state import-config init probe password daemon status oauth complete-accounts help" -f -a "adopt" -d 'Record the messages on the server as delivered without downloading them, to start from now on a mailbox already read elsewhere'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from sync list accounts adopt import-state import-config init probe password daemon status oauth complete-accounts help" -f -a "import-state" -d 'Record the messages another fetcher already delivered, so switching tools does not fetch a mailbox again'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from sync list accounts adopt import-state import-config init probe password daemon status oauth complete-accounts help" -f -a "import-config" -d 'Convert fetchmail\'s, mpop\'s or getmail\'s configuration into popfetch\'s: printed, or with --write written to the configuration file (mode 0600, never over an existing one); what does not map is kept as comments'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from sync list accounts adopt import-state import-config init probe password daemon status oauth complete-accounts help" -f -a "init" -d 'Write a commented configuration file (asks for what is not given, at a terminal; never overwrites)'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from sync list accounts adopt import-state import-config init probe password daemon status oauth complete-accounts help" -f -a "probe" -d 'Connect to a server and show what it offers: greeting, capabilities, TLS, certificate (with its fingerprint) and login methods'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from sync list accounts adopt import-state import-config init probe password daemon status oauth complete-accounts help" -f -a "password" -d 'Manage an account\'s password in the system keyring (service "popfetch", entry USER@HOST)'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from sync list accounts adopt import-state import-config init probe password daemon status oauth complete-accounts help" -f -a "daemon" -d 'Poll the named accounts, or all of them, every poll_interval until stopped: SIGUSR1 polls now, SIGHUP reloads the configuration, SIGTERM stops'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from sync list accounts adopt import-state import-config init probe password daemon status oauth complete-accounts help" -f -a "status" -d 'What each account\'s last run did (from cron, by hand or the daemon): its time, result and exit code, the last success, the messages delivered and known, and the daemon\'s next poll'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from sync list accounts adopt import-state import-config init probe password daemon status oauth complete-accounts help" -f -a "oauth" -d 'Log an account in to its OAuth provider once, show its tokens\' state, or log it out (oauth_provider in the configuration)'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from sync list accounts adopt import-state import-config init probe password daemon status oauth complete-accounts help" -f -a "complete-accounts" -d 'Account names, one a line, for the shell completions'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and not __fish_seen_subcommand_from sync list accounts adopt import-state import-config init probe password daemon status oauth complete-accounts help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and __fish_seen_subcommand_from password" -f -a "set" -d 'Store the password: prompted for on a terminal, else read from stdin'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and __fish_seen_subcommand_from password" -f -a "delete" -d 'Remove the stored password'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and __fish_seen_subcommand_from oauth" -f -a "login" -d 'Log in once: shows a code to enter at the provider\'s page (the device flow), or with --browser signs in through a browser on this machine'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and __fish_seen_subcommand_from oauth" -f -a "status" -d 'Show whether a refresh token is stored and when the access token expires; exits 77 when an account needs a login'
complete -c popfetch -n "__fish_popfetch_using_subcommand help; and __fish_seen_subcommand_from oauth" -f -a "logout" -d 'Revoke the grant where the provider can, and forget the tokens'

# Account names come from the configuration, read when completing
# (`popfetch complete-accounts` is a hidden subcommand that prints them).
complete -c popfetch -n "__fish_seen_subcommand_from sync list probe import-state" -f -a "(popfetch complete-accounts 2>/dev/null)"
complete -c popfetch -n "__fish_seen_subcommand_from set delete" -f -a "(popfetch complete-accounts 2>/dev/null)"

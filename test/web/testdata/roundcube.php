<?php
// A Roundcube stand-in for the end-to-end suite, with Roundcube's own
// reading of a request (public_html/index.php, rcmail::startup,
// rcube_utils::get_input_value): served at /, /index.php and below it; a
// client without a session always has the task "login"; the action comes
// from GET, then POST, then the cookies (the last present wins), through
// strip_tags and asciiwords; the account is trim(strip_tags($_POST['_user'])).
// Every login it performs is appended to the file $RC_LOG (account and
// password: the tests check that a refused login carries a decoy only).
function gpc($name) {
    $v = null;
    if (isset($_GET[$name])) $v = $_GET[$name];
    if (isset($_POST[$name])) $v = $_POST[$name];
    if (isset($_COOKIE[$name])) $v = $_COOKIE[$name];
    return is_string($v) ? strip_tags($v) : '';
}
$action = preg_replace('/[^a-z0-9_.-]+/i', '', gpc('_action'));
if ($action === 'login') {
    $user = isset($_POST['_user']) && is_string($_POST['_user']) ? trim(strip_tags($_POST['_user'])) : '';
    $pass = isset($_POST['_pass']) && is_string($_POST['_pass']) ? $_POST['_pass'] : '';
    file_put_contents(getenv('RC_LOG'), json_encode(['user' => $user, 'pass' => $pass]) . "\n", FILE_APPEND | LOCK_EX);
    if (($user === 'alice@example.test' && $pass === 'alice-pass-1') || ($user === 'ceo@example.test' && $pass === 'ceo-pass-1')) {
        header('Location: ./?_task=mail', true, 302);
        exit;
    }
    http_response_code(401);
    echo "<html><body>Login failed.</body></html>\n";
    exit;
}
echo "<html><body>Roundcube login page</body></html>\n";

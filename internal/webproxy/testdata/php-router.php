<?php
// The differential test's peer: prints how PHP read the request, every
// key and string as hex so that no byte is lost, and Roundcube's routing.
function hexed($v) {
    if (!is_array($v)) {
        return bin2hex((string)$v);
    }
    $out = [];
    foreach ($v as $k => $x) {
        $out[] = [bin2hex((string)$k), hexed($x)];
    }
    return ['array' => $out];
}
function gpc($name) {
    // rcube_utils::get_input_value($name, RCUBE_INPUT_GPC) then
    // get_input_string and asciiwords, as Roundcube routes a request.
    $v = null;
    if (isset($_GET[$name])) $v = $_GET[$name];
    if (isset($_POST[$name])) $v = $_POST[$name];
    if (isset($_COOKIE[$name])) $v = $_COOKIE[$name];
    if (!is_string($v)) return '';
    return preg_replace('/[^a-z0-9_.-]+/i', '', strip_tags($v));
}
// An application may also read a JSON body (SnappyMail, SOGo-like
// clients): its members are shown too, whatever the Content-Type.
$json = json_decode(file_get_contents('php://input'), true);
if (!is_array($json)) $json = [];
$user = isset($_POST['_user']) && is_string($_POST['_user']) ? trim(strip_tags($_POST['_user'])) : '';
header('Content-Type: application/json');
echo json_encode([
    'get' => hexed($_GET),
    'post' => hexed($_POST),
    'cookie' => hexed($_COOKIE),
    'json' => hexed($json),
    'files' => hexed(array_keys($_FILES)),
    'rc_action' => gpc('_action'),
    'rc_user' => bin2hex($user),
]);

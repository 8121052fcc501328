<?php
declare(strict_types=1);

// Explicit ids: other data (and the real app) refers to actions by fixed id.
$names = ['created', 'updated', 'deleted', 'assigned', 'commented', 'closed',
          'reopened', 'archived', 'restored', 'moved', 'attached', 'mentioned'];

$rows = [];
foreach ($names as $i => $name) {
    $rows[] = ['id' => $i + 1, 'name' => $name];
}

return ['table' => 'actions', 'rows' => $rows];

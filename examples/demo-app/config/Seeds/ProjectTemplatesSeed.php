<?php
declare(strict_types=1);

return [
    'table' => 'project_templates',
    'rows' => [
        ['id' => 1, 'title' => 'Software Development'],
        ['id' => 2, 'title' => 'Marketing Campaign'],
        ['id' => 3, 'title' => 'Bug Tracking'],
    ],
];

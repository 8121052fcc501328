"""OrangeScrum CE as its users drive it, over real HTTP: sign-up of the first company, the login
form with its CSRF token, a task with attachments, the project-overview PDF. The requests are the
app's own (its pages' JavaScript sends them); tests/engine/test_orangescrum.py uses them."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from helpers import git

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "orangescrum-ce"
ADMIN = {"email": "admin@example.com", "password": "Secret-pass-123"}
COMPANY = "Durango Test Co"


def fixture() -> Path:
    """The OrangeScrum CE fixture (shared/fixtures/orangescrum-ce beside this checkout)."""
    import os

    return Path(os.environ.get("ORANGESCRUM_FIXTURE") or FIXTURE)


def clone(dest: Path) -> Path:
    """A clone of the app's bundle (main checked out) and a branch `v0.1.0-locked`: the v0.1.0
    tag with main's composer.json and composer.lock, because v0.1.0's own constraints name
    releases that only Packagist has (the fixture's README, Deviations)."""
    subprocess.run(["git", "clone", "-q", str(fixture() / "app.bundle"), str(dest)], check=True)
    git(dest, "checkout", "-q", "-b", "v0.1.0-locked", "v0.1.0")
    git(dest, "checkout", "-q", "main", "--", "composer.json", "composer.lock")
    git(dest, "commit", "-q", "-m", "v0.1.0 with the fixture's lock")
    git(dest, "checkout", "-q", "main")
    return dest


@dataclass
class Client:
    """One browser session's worth of the app: cookies, and the page's CSRF token."""

    base: str
    session: requests.Session = field(default_factory=requests.Session)
    token: str = ""

    def get(self, path: str, **kw: object) -> requests.Response:
        return self.session.get(self.base + path, allow_redirects=False, timeout=60, **kw)  # type: ignore[arg-type]

    def sign_up(self) -> dict[str, object]:
        """The first company, as the sign-up page's JavaScript posts it (no CSRF token there)."""
        page = self.get("/users/signup")
        assert page.status_code == 200 and re.search(r"<title>\s*Sign Up", page.text), page.text[
            :300
        ]
        answer = self.session.post(
            self.base + "/users/register-user",
            data={
                "name": "Ada",
                "company": COMPANY,
                "seo_url": "durangotestco",
                "email": ADMIN["email"],
                "password": ADMIN["password"],
                "timezone_id": "0",
            },
            headers={"X-Requested-With": "XMLHttpRequest"},
            allow_redirects=False,
            timeout=60,
        )
        assert answer.status_code == 200, answer.text[:300]
        found: dict[str, object] = answer.json()
        return found

    def log_in(self) -> requests.Response:
        """Through the login form with its CSRF token; then the dashboard (a failed CSRF check
        also answers 302, so only /dashboard tells)."""
        page = self.get("/users/login")
        match = re.search(r'name="_csrfToken"[^>]*value="([^"]+)"', page.text)
        assert page.status_code == 200 and match, page.status_code
        posted = self.session.post(
            self.base + "/users/login",
            data={"_csrfToken": match.group(1), **ADMIN},
            allow_redirects=False,
            timeout=60,
        )
        assert posted.status_code == 302, posted.status_code
        return self.dashboard()

    def dashboard(self) -> requests.Response:
        board = self.get("/dashboard")
        assert board.status_code == 200, (board.status_code, board.headers.get("Location"))
        token = re.search(r"const _csrfToken = '([^']*)'", board.text)
        self.token = token.group(1) if token else ""
        return board

    def ajax(self, method: str, path: str, **kw: object) -> requests.Response:
        headers = {"X-Requested-With": "XMLHttpRequest", "X-CSRF-Token": self.token}
        return self.session.request(
            method,
            self.base + path,
            headers=headers,
            allow_redirects=False,
            timeout=180,
            **kw,  # type: ignore[arg-type]
        )

    def upload(self, name: str, content: bytes, kind: str) -> str:
        """A file for a task (the upload box): the app's name for it."""
        answer = self.ajax(
            "POST",
            f"/easycases/fileupload?{int(time.time())}",
            files={"data[Easycase][case_files]": (name, content, kind)},
        )
        assert answer.status_code == 200 and answer.json().get("message") == "success", answer.text
        return str(answer.json()["filename"])

    def create_task(self, project: str, user: int, files: list[str]) -> dict[str, object]:
        """A task with attachments, as the task form posts it."""
        data = {
            "pid": project, "CS_project_id": project, "CS_istype": "1",
            "CS_title": "Task with attachment", "CS_type_id": "", "CS_priority": "1",
            "CS_message": "<p>body</p>", "CS_assign_to": str(user), "CS_start_date": "",
            "CS_due_date": "", "CS_milestone": "", "postdata": "Post", "pagename": "dashboard",
            "allFiles[]": files, "CS_id": "0", "CS_case_no": "", "datatype": "0",
            "CS_legend": "1", "prelegend": "", "hours": "", "estimated_hours": "",
            "completed": "0", "taskid": "0", "task_uid": "", "editRemovedFile": "",
            "is_client": "0", "timelog": "false", "CS_isRecurring": "0", "CS_parent_id": "",
            "split_task_estd": "",
        }  # fmt: skip
        answer = self.ajax("POST", "/easycases/ajaxpostcase", data=data)
        assert answer.status_code == 200 and answer.json().get("success") == "success", answer.text
        found: dict[str, object] = answer.json()
        return found

    def project_pdf(self, project: str) -> requests.Response:
        """The project-overview PDF: the app renders it with wkhtmltopdf, then serves it."""
        made = self.ajax(
            "POST", "/easycases/downloadProjectOverview", data={"project_UID": project}
        )
        assert made.status_code == 200 and made.json().get("status") == 1, made.text[:300]
        return self.get(f"/easycases/downloadProjectOverview?project_UID={project}&download=1")


# Run by the binary's php-cli in the app's container: one job on the app's default queue (the
# file queue under tmp/), sent by the debug transport, so processing it needs no mail server.
PUSH_JOB = r"""<?php
$app = getenv('FRANKENPHP_APP_DIR');
require $app . '/vendor/autoload.php';
$queue = ['url' => 'file://' . $app . '/tmp/queue', 'queue' => 'default'];
\Cake\Queue\QueueManager::setConfig('default', $queue);
$msg = new \Cake\Mailer\Message();
$msg->setFrom('noreply@example.com')->setTo('admin@example.com');
$msg->setSubject('queue probe')->setBodyText('probe');
\Cake\Queue\QueueManager::push(\Cake\Queue\Job\SendMailJob::class, [
    'transport' => \Cake\Mailer\Transport\DebugTransport::class,
    'emailMessage' => json_encode($msg),
]);
echo "pushed\n";
"""


def copy_without(source: Path, dest: Path, missing: str) -> Path:
    """A copy of an artifact repository that lacks one package's zip."""
    shutil.copytree(source, dest)
    (dest / missing).unlink()
    return dest

"""python-jenkins is loaded under another name, because this app owns the name ``jenkins``."""

import sys
from importlib import metadata
from pathlib import Path

import jenkins
from jenkins import client


def test_import_jenkins_is_this_app():
    assert Path(jenkins.__file__).parent == Path(client.__file__).parent
    assert jenkins.__name__ == "jenkins" and not hasattr(jenkins, "Jenkins")


def test_python_jenkins_is_the_installed_library_under_its_own_name():
    pj = client.pj
    assert pj.__name__ == "python_jenkins"
    assert sys.modules["python_jenkins"] is pj
    dist = metadata.distribution("python-jenkins")
    assert dist.version == "1.8.3"
    assert Path(pj.__file__) == Path(str(dist.locate_file("jenkins/__init__.py")))
    assert pj.Jenkins.__module__ == "python_jenkins"
    assert pj.plugins.__name__ == "python_jenkins.plugins"
    assert issubclass(pj.NotFoundException, pj.JenkinsException)


def test_loading_leaves_no_trace_under_our_name_and_is_done_once():
    assert "jenkins.plugins" not in sys.modules
    assert client.load_python_jenkins() is client.pj


def test_job_path_spells_folders_as_jenkins_does():
    assert client.job_path("nightly") == "job/nightly/"
    assert client.job_path("hw lab/fw/nightly") == "job/hw%20lab/job/fw/job/nightly/"
    assert client.pj.Jenkins("http://x/")._get_job_folder("a/b/c") == ("job/a/job/b/", "c")


def test_every_call_has_a_timeout():
    made = client.JenkinsClient(url="http://x", connect_timeout=3, read_timeout=20)
    assert made._jenkins.timeout == (3, 20)
    assert made.url == "http://x/"
    assert made._jenkins._session.verify is True
    assert client.JenkinsClient(url="http://x/", verify_tls=False)._jenkins._session.verify is False

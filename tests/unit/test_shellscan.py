"""Every placement of a template variable a pipeline author may write, rendered and run
for real by bash (and dash where the syntax is POSIX) with hostile keys: the job prints
the key byte for byte, or the template is refused when it loads; no key ever runs a
command (the canary each key would create is checked where the key would write it)."""
from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
from pathlib import Path

import pytest

from slurm_trigger import shellscan
from slurm_trigger.s3events import ObjectRef
from slurm_trigger.slurm.models import JobSubmission
from slurm_trigger.templating import (
    TemplateError,
    UnsafeValueError,
    check_template,
    compile_script,
    object_variables,
    render,
)

# CANARY is replaced by an absolute path in the test's own directory.
HOSTILE_KEYS = [
    "in/$(touch CANARY)",
    "in/`touch CANARY`",
    "in/a; touch CANARY",
    "in/a && touch CANARY | cat",
    "in/it's \"quoted\" \\ back\\slash",
    "in/a[$(touch CANARY)]",
    "in/${IFS}$HOME$((1+1))",
    "in/\u00fcnic\u00f8de \u2603 \U0001f600",
    "in/with  spaces and+plus%20",
    "in/*",
    "-n",
    "in/" + "k" * 1021,
]

# name -> (script body, what it prints for key K, runs under POSIX sh too)
ALLOWED = {
    "bare word": ("printf '%s' ${key}", "{key}", True),
    "double quotes": ('printf \'%s\' "${key}"', "{key}", True),
    "double quotes with text": ('printf \'%s\' "<${key}>"', "<{key}>", True),
    "word with text": ("printf '%s' pre${key}post", "pre{key}post", True),
    "echo": ('echo "${key}"', "{key}\n", False),  # bash's echo: "-n" is an option (printed by test below)
    "assignment": ('K=${key}; printf \'%s\' "$K"', "{key}", True),
    "quoted assignment": ('K="${key}"; printf \'%s\' "$K"', "{key}", True),
    "assignment before a command": ("K=${key} env | grep -q . && printf '%s' ok", "ok", True),
    "local": ('f() { local v="${key}"; printf \'%s\' "$v"; }; f', "{key}", False),
    "declare value": ('declare -r D=${key}; printf \'%s\' "$D"', "{key}", False),
    "export": ('export E=${key}; printf \'%s\' "$E"', "{key}", True),
    "array": ('A=(${key} "${key}" x); printf \'%s|%s|%s\' "${A[0]}" "${A[1]}" "${A[2]}"', "{key}|{key}|x", False),
    "unquoted heredoc": ("cat <<EOF\n${key}\nEOF", "{key}\n", True),
    "unquoted heredoc with quotes": ("cat <<EOF\n\"${key}\" '${key}'\nEOF", "\"{key}\" '{key}'\n", True),
    "heredoc <<-": ("cat <<-EOF\n\t${key}\n\tEOF", "{key}\n", True),
    "two heredocs on a line": ("cat <<A - 3<<'B'\n${key}\nA\nquoted\nB", "{key}\n", True),
    "heredoc with $( )": ("cat <<EOF\n$(printf '%s' \"${key}\")\nEOF", "{key}\n", True),
    "here-string": ("cat <<< ${key}", "{key}\n", False),
    "backticks": ("printf '%s' \"`printf '%s' \"${key}\"`\"", "{key}", True),
    "command substitution": ('printf \'%s\' "$(printf \'%s\' ${key})"', "{key}", True),
    "nested substitution": ('printf \'%s\' "$(printf \'%s\' "$(printf \'%s\' "${key}")" | cat)"', "{key}", True),
    "case subject and pattern": ("case ${key} in ${key}) printf '%s' \"${key}\";; *) echo no;; esac", "{key}", True),
    "case pattern glob": ('case "x${key}y" in x*"${key}"*) printf \'%s\' hit;; esac', "hit", True),
    "case in $( )": ("printf '%s' \"$(case ${key} in *) printf '%s' ${key};; esac)\"", "{key}", True),
    "[[ == ]]": ('[[ ${key} == "${key}" ]] && printf \'%s\' ${key}', "{key}", False),
    "[[ =~ ]]": ('[[ ${key} =~ ${key} ]] && printf \'%s\' yes', "yes", False),
    "[[ -n ]]": ('[[ -n ${key} && ${key} != "" ]] && printf \'%s\' yes', "yes", False),
    "[ = ]": ('[ "${key}" = ${key} ] && printf \'%s\' yes', "yes", True),
    "for loop": ("for k in ${key}; do printf '%s' \"$k\"; done", "{key}", True),
    "default": ('printf \'%s\' "${UNSET:-${key}}"', "{key}", True),
    "bare default": ("printf '%s' ${UNSET:-${key}}", "{key}", True),
    "pattern": ('printf \'%s\' "${SLURM_TRIGGER_KEY#${dirname}/}"', "{basename}", True),
    "if": ('if test -n "${key}"; then printf \'%s\' ${key}; fi', "{key}", True),
    "pipeline": ("printf '%s' ${key} | cat", "{key}", True),
    "redirect target": ("printf '%s' x > ${basename}.out && cat -- ${basename}.out", "x", True),
    "bash -c positional": ("bash -c 'printf \"%s\" \"$1\"' _ ${key}", "{key}", True),
    "python argv": ("python3 -c 'import sys; sys.stdout.write(sys.argv[1])' ${key}", "{key}", True),
    "awk file operand": ("printf x > ./${basename}.t && awk '{printf \"%s\", $0}' ./${basename}.t", "x", True),
    "comment": ("# ${key} $(touch CANARY)\nprintf ok", "ok", True),
    "subshell": ("(printf '%s' ${key})", "{key}", True),
    "function": ("f() { printf '%s' \"$1\"; }\nf ${key}", "{key}", True),
    "escaped": ("printf '%s' $${key}", "", True),
    "numeric in arithmetic": ("echo $(( ${size} + 1 )) $[${size}*2]; (( ${size} > 1 )) && echo y", "11 20\ny\n", False),
    "numeric in eval": ('eval "echo ${size}"', "10\n", True),
    "numeric in [[ -gt ]]": ("[[ ${size} -gt 3 ]] && echo y", "y\n", False),
}

# name -> script body; each must be refused when it loads.
REFUSED = {
    "single quotes": "echo '${key}'",
    "single quotes in text": "echo 'a'b'${key}'",
    "ansi-c quotes": "echo $'${key}'",
    "quoted heredoc": "cat <<'EOF'\n${key}\nEOF",
    "double-quoted heredoc delimiter": 'cat <<"EOF"\n${key}\nEOF',
    "escaped heredoc delimiter": "cat <<\\EOF\n${key}\nEOF",
    "second heredoc quoted": "cat <<A <<'B'\nok\nA\n${key}\nB",
    "$(( ))": "echo $(( ${key} ))",
    "$(( )) with a substitution": "echo $(( $(echo ${key}) + 1 ))",
    "(( ))": "(( ${key} ))",
    "for (( ))": "for (( i=${key}; i<2; i++ )); do :; done",
    "let": "let x=${key}",
    "[[ -eq ]]": "[[ ${key} -eq 1 ]]",
    "[[ -eq ]] right": '[[ 1 -lt "${key}" ]]',
    "[[ -v ]]": "[[ -v ${key} ]]",
    "array subscript": "a[${key}]=1",
    "array element subscript": "a=([${key}]=1)",
    "subscript in expansion": 'echo "${a[${key}]}"',
    "substring offset": 'echo "${X:${key}}"',
    "replacement": 'echo "${X/a/${key}}"',
    "declare -i": "declare -i n=${key}",
    "declare name": 'declare "${key}"',
    "local name": 'f() { local ${key}=1; }',
    "read": "read ${key} </dev/null",
    "printf -v": 'printf -v "${key}" %s 1',
    "unset": 'unset "${key}"',
    "eval": 'eval "echo ${key}"',
    "eval bare": "eval echo ${key}",
    "command eval": "command eval echo ${key}",
    "bash -c": 'bash -c "echo ${key}"',
    "sh -c": "sh -c ${key}",
    "bash -xc": 'bash -xc "echo ${key}"',
    "quoted -c": 'bash "-c" "echo ${key}"',
    "bash script": "bash ${key}",
    "sudo sh -c": 'sudo -u nobody sh -c "echo ${key}"',
    "srun bash -c": 'srun -n1 bash -lc "echo ${key}"',
    "xargs sh -c": 'echo x | xargs -0 sh -c "echo ${key}"',
    "find -exec sh -c": 'find . -exec sh -c "echo ${key}" \\;',
    "env bash -c": 'env -i PATH=/bin /bin/bash -c "echo ${key}"',
    "$SHELL -c": '"$SHELL" -c "echo ${key}"',
    "ssh": 'ssh host "ls ${key}"',
    "ssh bare": "ssh -p 22 host ls ${key}",
    "su -c": 'su - nobody -c "ls ${key}"',
    "source": "source ${key}",
    "dot": ". ${key}",
    "trap": 'trap "echo ${key}" EXIT',
    "watch": "watch ls ${key}",
    "bash heredoc": "bash <<EOF\necho ${key}\nEOF",
    "ssh heredoc": "ssh host <<EOF\necho ${key}\nEOF",
    "sbatch heredoc": "sbatch -p debug <<EOF\n#!/bin/bash\necho ${key}\nEOF",
    "sbatch --wrap": 'sbatch --wrap="echo ${key}"',
    "here-string to bash": "bash <<< ${key}",
    "pipe into bash": 'echo "${key}" | bash',
    "pipe into sh -s": 'printf "%s" "${key}" | cat | sh -s',
    "cat heredoc into bash": "cat <<EOF | bash\necho ${key}\nEOF",
    "process substitution": "bash <(echo ${key})",
    "source process substitution": "source <(echo ${key})",
    "python -c": 'python3 -c "print(\'${key}\')"',
    "python script": "python3 ${key}",
    "python -m": "python3 -m ${key}",
    "perl -e": 'perl -ne "print \'${key}\'"',
    "awk program": 'awk "BEGIN { print \\"${key}\\" }"',
    "awk -F program": 'awk -F , "{ print \\"${key}\\" }" file',
    "sed script": 'sed "s/x/${key}/" file',
    "sed -e": 'sed -n -e "s/x/${key}/p" file',
    "xargs -I": 'echo "${key}" | xargs -I{} sh -c "echo {}"',
    "backslash": "echo \\${key}",
    "backslash in double quotes": 'echo "\\${key}"',
    "backticks with backslashes": 'echo "`echo \\"${key}\\"`"',
    "heredoc delimiter": "cat <<${key}\nx\n${key}\n",
    "python script file": "#!/usr/bin/env python3\nprint('${key}')",
    "unterminated quote": 'echo "${key}',
    "numeric in single quotes": "echo '${size}'",
    "numeric in arithmetic in PS4": "PS4=$(( ${size} )); set -x",
    "PS4": "PS4=${key}; set -x; true",
    "export BASH_ENV": 'export BASH_ENV="${key}"',
    "PATH prefix": "PATH=${key}:$PATH tool",
    "alias": 'alias p="ls ${key}"',
    "xargs sh -c without code": 'echo "${key}" | xargs sh -c',
    # found by the pipeline-authoring audit: each loaded, and each ran the key
    "python - heredoc": "python3 - <<EOF\nprint('${key}')\nEOF",
    "perl - heredoc": "perl - <<EOF\nprint '${key}';\nEOF",
    "declare -i, then assigned": "declare -i n\nn=${key}",
    "local -i, then a for loop": "f() {\n  local -i n\n  for n in ${key}; do :; done\n}\nf",
    "integer variable RANDOM": "RANDOM=${key}",
    "#SBATCH line": "#!/bin/bash\n#SBATCH --output=/shared/${key}.out\necho hi",
    "heredoc written, then run by bash": "cat > run.sh <<EOF\necho ${key}\nEOF\nbash run.sh",
    "heredoc written, then sbatch": "cat > sub.sh <<EOF\n#!/bin/bash\nprocess ${key}\nEOF\nsbatch -p debug sub.sh",
    "echo appended, then sourced": 'echo "K=${key}" >> vars.sh\nsource ./vars.sh',
    "printf written, then executed": 'printf "%s\\n" "echo ${key}" > "$TMP/job.sh"\nchmod +x "$TMP/job.sh"\n"$TMP/job.sh"',
    "Rscript -e": 'Rscript -e "print(\'${key}\')"',
    "R heredoc": "R --vanilla <<EOF\nx <- '${key}'\nEOF",
    "julia -e": 'julia -e "println(\\"${key}\\")"',
    "php -r": 'php -r "echo \'${key}\';"',
    "lua -e": 'lua -e "print([[${key}]])"',
    "tclsh stdin": 'echo "puts ${key}" | tclsh',
    "octave --eval": 'octave --eval "disp(\'${key}\')"',
    "matlab -batch": 'matlab -batch "disp(\'${key}\')"',
    "ncl arguments": 'ncl "f=\\"${key}\\"" plot.ncl',
    "gnuplot -e": 'gnuplot -e "f=\'${key}\'" plot.gp',
    "crontab stdin": 'echo "0 * * * * ls ${key}" | crontab -',
    # sbatch/srun split --export at commas: a key "x,BASH_ENV=/fsx/in/evil.sh" sets BASH_ENV
    "sbatch --export": "sbatch --export=ALL,INPUT=${key} -p debug job.sh",
    "srun --export": "srun --export ALL,INPUT=${key} ./tool",
    # the value as the command: the key would choose the program (a key "rm" or "/fsx/in/evil")
    "the command": "${key} --version",
    "the command, quoted": '"${key}" -v',
    "the command's path": "/opt/tools/${key}/bin/run input",
    "the command after exec": "exec ${key}",
    "the command of a pipeline stage": "cat list | ${key}",
    "the command of an if": "if ${key}; then echo ok; fi",
    "env's command (or its -S option)": "env ${key} true",
}


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return tmp_path / "canary"


def keys(canary: Path) -> list[str]:
    return [k.replace("CANARY", str(canary)) for k in HOSTILE_KEYS]


def run(script: str, key: str, shell: str, cwd: Path, metadata=None) -> subprocess.CompletedProcess[bytes]:
    ref = ObjectRef("bkt", key, size=10, etag="e", version_id="v1", sequencer="s")
    job = render(JobSubmission(script=f"#!/bin/{shell}\n{script}\n"), object_variables(ref, "p", "st-x", metadata))
    env = {"PATH": os.environ["PATH"], **job.environment}
    # the job's own shell: reads the script from a file, as slurmd runs it
    path = cwd / "job.sh"
    path.write_text(job.script, encoding="utf-8")
    return subprocess.run([shell, str(path)], env=env, capture_output=True, cwd=cwd, timeout=30)


@pytest.mark.parametrize("placement", list(ALLOWED))
def test_allowed_placement_prints_every_key_byte_for_byte(placement, tmp_path, canary):
    body, expected, posix = ALLOWED[placement]
    body = body.replace("CANARY", str(canary))
    check_template(JobSubmission(script=body), metadata=False)  # loads
    shells = ["bash", "dash"] if posix and shutil.which("dash") else ["bash"]
    for shell in shells:
        for key in keys(canary):
            if placement == "echo" and key == "-n":
                continue  # echo's own option, not a template matter
            if "basename" in body and len(posixpath.basename(key).encode()) > 200:
                continue  # a file named by the basename: longer than a file name may be
            work = tmp_path / "work"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            result = run(body, key, shell, work)
            dirname, basename = posixpath.split(key)
            want = expected.format(key=key, basename=basename, dirname=dirname).encode()
            assert result.returncode == 0, (shell, key, result.stderr.decode())
            assert result.stdout == want, (shell, key)
            assert not canary.exists(), (shell, key)


def test_echo_prints_the_key_as_echo_would():
    """``echo "${key}"`` hands echo exactly the key, options and all (use printf '%s')."""
    script = compile_script('echo "${key}"').text
    assert script == 'echo "${SLURM_TRIGGER_KEY}"'


@pytest.mark.parametrize("placement", list(REFUSED))
def test_refused_placement_fails_to_load_with_a_clear_error(placement):
    body = REFUSED[placement]
    var = "size" if "numeric" in placement else "key"
    with pytest.raises(TemplateError) as err:
        check_template(JobSubmission(script=body), metadata=False)
    message = str(err.value)
    assert "'script'" in message
    if placement != "unterminated quote":
        assert f"${{{var}}} on line " in message and f"SLURM_TRIGGER_{var.upper()}" in message, message


def test_error_names_line_context_and_environment_variable():
    with pytest.raises(TemplateError) as err:
        check_template(JobSubmission(script="#!/bin/bash\necho ok\nawk '{print \"${stem}\"}' f\n"), metadata=False)
    message = str(err.value)
    assert "${stem} on line 3 of the script is in single quotes" in message
    assert 'ENVIRON["SLURM_TRIGGER_STEM"]' in message


def test_every_refusal_is_listed():
    with pytest.raises(TemplateError) as err:
        check_template(JobSubmission(script="echo '${key}'\neval ${stem}\necho $(( ${etag} ))\n"), metadata=False)
    message = str(err.value)
    assert "${key} on line 1" in message and "${stem} on line 2" in message and "${etag} on line 3" in message


def test_refused_keys_would_really_have_run(tmp_path, canary):
    """The refusals are not fussiness: pasted as the old shell-quoting did, each of these
    placements runs the key (proof that the scanner guards real holes)."""
    import shlex

    key = f"in/$(touch {canary})"
    for body in ('echo "${key}"', "echo '${key}'", "cat <<EOF\n${key}\nEOF", 'eval "echo ${key}"'):
        script = body.replace("${key}", shlex.quote(key))
        subprocess.run(["bash", "-c", script], capture_output=True, cwd=tmp_path, timeout=30)
        assert canary.exists(), body
        canary.unlink()


def test_new_refusals_would_really_have_run(tmp_path, canary):
    """The audit's refusals guard real holes: each script as it rendered before (the
    reference pasted where the value was) runs a key's command in bash."""
    cases = {
        "declare -i n\nn=\"${SLURM_TRIGGER_KEY}\"": f"a[$(touch {canary})]",
        "f() {\n local -i n\n for n in \"${SLURM_TRIGGER_KEY}\"; do :; done\n}\nf": f"a[$(touch {canary})]",
        "RANDOM=\"${SLURM_TRIGGER_KEY}\"": f"a[$(touch {canary})]",
        "python3 - <<EOF\nprint('${SLURM_TRIGGER_KEY}')\nEOF": f"');import os;os.system('touch {canary}');('",
        "cat > run.sh <<EOF\necho ${SLURM_TRIGGER_KEY}\nEOF\nbash run.sh": f"$(touch {canary})",
        'echo "K=${SLURM_TRIGGER_KEY}" >> vars.sh\nsource ./vars.sh': f"x;touch {canary}",
    }
    for script, key in cases.items():
        env = {"PATH": os.environ["PATH"], "SLURM_TRIGGER_KEY": key}
        subprocess.run(["bash", "-c", script], env=env, capture_output=True, cwd=tmp_path, timeout=30)
        assert canary.exists(), script
        canary.unlink()


def test_a_value_as_the_command_would_really_have_run(tmp_path, canary):
    """As the command, a quoted reference still lets the key choose the program: a key
    naming an object the uploader made executable (a mounted bucket, a shared
    file system) runs it."""
    evil = tmp_path / "in" / "evil"
    evil.parent.mkdir()
    evil.write_text(f"#!/bin/sh\ntouch {canary}\n")
    evil.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "SLURM_TRIGGER_KEY": str(evil)}
    subprocess.run(["bash", "-c", '"${SLURM_TRIGGER_KEY}" --version'], env=env, capture_output=True, cwd=tmp_path,
                   timeout=30)
    assert canary.exists()


# A value that starts with "-" where a program that can run a command reads options.
OPTION_PLACEMENTS = {
    "sed input file (GNU sed permutes)": ("sed -n 's/a/b/p' f.txt ${basename}", "-e1e touch CANARY"),
    "perl -pe input file": ("perl -pe 's/a/b/' ${basename} f.txt", "-e;system q(touch CANARY)"),
    "tar member": ("tar cf o.tar ${basename} f.txt", "--use-compress-program=touch CANARY"),
    "tar member, quoted": ('tar cf o.tar "${basename}" f.txt', "--use-compress-program=touch CANARY"),
    "printf format": ("printf ${basename} 1", "-va[$(touch CANARY)]"),
}


@pytest.mark.parametrize("placement", list(OPTION_PLACEMENTS))
def test_a_value_read_as_an_option_is_refused_when_it_renders(placement, tmp_path, canary):
    """``sed ... ${basename}`` loads (a file operand is data), but a basename that starts
    with "-" is an option to sed, and GNU sed's ``-e1e cmd`` runs cmd: that object is
    refused (a permanent failure, reported) instead of becoming a job; any other object
    renders, and ``-- ${var}`` or ``./${var}`` loads and runs whatever the key."""
    body, basename = OPTION_PLACEMENTS[placement]
    basename = basename.replace("CANARY", canary.name)  # a basename holds no "/": run in its folder
    (tmp_path / "f.txt").write_text("abc\n")
    template = JobSubmission(script=f"#!/bin/bash\n{body}\n")
    check_template(template, metadata=False)
    hostile = object_variables(ObjectRef("bkt", f"in/{basename}", size=3), "p", "st-x")
    with pytest.raises(UnsafeValueError, match="starts with '-'.*option"):
        render(template, hostile)
    render(template, object_variables(ObjectRef("bkt", "in/f.txt", size=3), "p", "st-x"))
    # the refusal is not fussiness: the job as it rendered before runs the key's command
    before = compile_script(body).text
    env = {"PATH": os.environ["PATH"], "SLURM_TRIGGER_BASENAME": basename}
    subprocess.run(["bash", "-c", before], env=env, capture_output=True, cwd=tmp_path, timeout=30)
    assert canary.exists(), before
    canary.unlink()
    safe = [body.replace("${basename}", "./${basename}")]
    safe += [body.replace(" ${basename}", " -- ${basename}")] if " ${basename}" in body else []
    for safe in safe:
        job = render(JobSubmission(script=safe), hostile)
        subprocess.run(["bash", "-c", job.script], env={"PATH": os.environ["PATH"], **job.environment},
                       capture_output=True, cwd=tmp_path, timeout=30)
        assert not canary.exists(), safe


def test_scanner_contexts():
    found = shellscan.scan('a ${key} "${key}" \'${key}\'\ncat <<EOF\n${key}\nEOF\n# ${key}\n')
    assert [(p.context, p.quote, bool(p.refused)) for p in found.placements] == [
        ("a bare word", True, False),
        ("double quotes", False, False),
        ("single quotes", False, True),
        ("an unquoted here-document", False, False),
        ("a comment", False, False),
    ]
    assert [p.line for p in found.placements] == [1, 1, 1, 3, 5]


def test_escapes_agree_with_the_template_grammar():
    text = "echo $${key} $$${key} '$${key}' \\$${key}"
    found = shellscan.scan(text)
    assert found.placements == [] and len(found.escapes) == 4
    assert compile_script(text).text == "echo ${key} $${key} '${key}' \\${key}"


def test_scripts_without_variables_are_not_judged():
    """A script the scanner cannot read is still the author's: only variables need it."""
    assert compile_script("echo 'unterminated").text == "echo 'unterminated"


def test_metadata_variables_are_referenced(tmp_path):
    result = run('printf \'%s\' "${metadata_run_id}"', "k", "bash", tmp_path, metadata={"run-id": "$(id) r7"})
    assert result.stdout == b"$(id) r7"


def test_rendered_script_is_the_same_for_every_object():
    sub = JobSubmission(script='#!/bin/bash\necho "${key}"\n')
    a = render(sub, object_variables(ObjectRef("b", "x y"), "p", "st-1")).script
    b = render(sub, object_variables(ObjectRef("b", "$(id)"), "p", "st-2")).script
    assert a == b == '#!/bin/bash\necho "${SLURM_TRIGGER_KEY}"\n'


@pytest.mark.parametrize("body", [
    "python3 tool.py --input ${key}",
    "python3 -u -m pkg.cli ${key}",
    "srun -n 1 python train.py ${key}",
    "conda run -n env python script.py ${key}",
    "awk -v k=\"${key}\" '$1 == k' list.txt",
    "grep -F -- \"${key}\" list.txt",
    "jq --arg k \"${key}\" '.[$k]' f.json",
    "read -r A B <<< \"${key}\"",
    "printf -v OUT '%s/%s' \"$DIR\" \"${basename}\"",
    "local -r name=${stem}; local -i n=${size}",
    "echo \"${key}\" | python3 -c 'import sys; print(sys.stdin.read())'",
    "echo ${key} | sed 's/a/b/'",
    "exec > >(tee \"${basename}.log\")",
    "sbatch --export=ALL -p debug job.sh ${key}",
    "perl script.pl ${key}",
    "node app.js ${key}",
    "eval \"$(conda shell.bash hook)\"; conda activate x; tool ${key}",
    "mpirun -np 4 ./solver \"${key}\"",
    "echo I wish R and ncl were here: ${key} <<< \"${stem}\"",  # programs' names as words
    "module load R julia && Rscript analysis.R ${key}",
    "cat > samples.txt <<EOF\n${key}\nEOF\nnextflow run main.nf --samples samples.txt",
    "printf '%s\\n' \"${key}\" > keys.txt\npython3 process.py keys.txt",
])
def test_ordinary_job_scripts_load(body):
    check_template(JobSubmission(script=f"#!/bin/bash\n{body}\n"), metadata=False)


@pytest.mark.parametrize("body", ["node -r ${key} app.js", "perl -M${key} -e 1", "ruby -r ${key} x.rb"])
def test_modules_are_code(body):
    with pytest.raises(TemplateError):
        check_template(JobSubmission(script=body), metadata=False)


def test_code_variables_in_the_environment_field_are_refused():
    with pytest.raises(TemplateError, match="environment.BASH_ENV"):
        check_template(JobSubmission(script="x", environment={"BASH_ENV": "/data/${key}"}), metadata=False)
    check_template(JobSubmission(script="x", environment={"INPUT": "${key}", "PATH": "/bin"}), metadata=False)


def _random_word(rng, depth: int) -> str:
    pick = rng.randrange(9 if depth > 0 else 3)
    if pick == 0:
        return "${key}"
    if pick == 1:
        return '"' + rng.choice(["${key}", "a ${key} b", "$(printf %s ${key})", "`printf %s ${key}`"]) + '"'
    if pick == 2:
        return rng.choice(["x", "'lit'", "-n", "-c"])
    if pick == 3:
        return "$(" + _random_command(rng, depth - 1) + ")"
    if pick == 4:
        return '"$(' + _random_command(rng, depth - 1) + ')"'
    if pick == 5:
        return "${X:-" + _random_word(rng, depth - 1) + "}"
    if pick == 6:
        return "'${key}'"
    if pick == 7:
        return "pre" + _random_word(rng, depth - 1)
    return "$(( " + rng.choice(["1", "${key}", "${size}"]) + " ))"


def _random_command(rng, depth: int) -> str:
    w = lambda: _random_word(rng, depth)  # noqa: E731
    return rng.choice([
        lambda: "printf '%s\\n' " + w(), lambda: "echo " + w() + " " + w(), lambda: "eval " + w(),
        lambda: "bash -c " + w() + " _ " + w(), lambda: "K=" + w() + '; printf %s "$K"',
        lambda: "cat <<EOF\n" + rng.choice(["${key}", "$(printf %s ${key})", "x"]) + "\nEOF",
        lambda: "cat <<'EOF'\n${key}\nEOF", lambda: "case " + w() + " in " + w() + ") echo m;; esac",
        lambda: "[[ " + w() + " == " + w() + " ]]", lambda: "[[ " + w() + " -eq 1 ]]",
        lambda: "A=(" + w() + " " + w() + ")",
        lambda: "echo " + w() + " | " + rng.choice(["bash", "cat", "sh -s", "python3", "cat | bash", "xargs sh -c"]),
        lambda: "let x=" + w(), lambda: "declare " + w(), lambda: "read " + w() + " </dev/null",
        lambda: "trap " + w() + " EXIT", lambda: "(( " + w() + " ))", lambda: "printf -v " + w() + " x",
        lambda: "test -v " + w(), lambda: "sed " + w() + " /dev/null", lambda: "awk " + w() + " /dev/null",
        lambda: "python3 -c " + w(), lambda: "bash <<< " + w(), lambda: "a[" + w() + "]=1",
        lambda: 'echo "${a[' + w() + ']}"', lambda: "f() { local v=" + w() + '; echo "$v"; }; f',
        lambda: "for i in " + w() + '; do echo "$i"; done', lambda: "PS4=" + w() + "; set -x; :",
    ])()


def test_random_scripts_that_load_never_run_a_key(tmp_path, canary):
    """Property: whatever a script does with ${key}, if it loads, no key's command runs.
    Seeded random compositions of the placements above, each run by bash with payloads
    aimed at the shell, arithmetic, Python, awk and sed."""
    import random

    rng = random.Random(20261201)
    payloads = [f"$(touch {canary})", f"`touch {canary}`", f"a[$(touch {canary})]", f";touch {canary};",
                f"x'$(touch {canary})'", f"__import__('os').system('touch {canary}')",
                f'BEGIN{{system("touch {canary}")}}', f"1e touch {canary}", f'"; touch {canary}; "']
    loaded = 0
    while loaded < 60:
        script = "#!/bin/bash\n" + "\n".join(_random_command(rng, 2) for _ in range(rng.randint(1, 3))) + "\n"
        if subprocess.run(["bash", "-n"], input=script.encode(), capture_output=True).returncode:
            continue
        try:
            text = compile_script(script).text
        except TemplateError:
            continue
        loaded += 1
        for key in payloads:
            env = {"PATH": os.environ["PATH"], "SLURM_TRIGGER_KEY": key, "SLURM_TRIGGER_SIZE": "3", "HOME": str(tmp_path)}
            subprocess.run(["bash", "-c", text], env=env, capture_output=True, cwd=tmp_path, timeout=10,
                           stdin=subprocess.DEVNULL)
            assert not canary.exists(), (key, script, text)

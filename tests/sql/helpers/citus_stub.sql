-- Stand-ins for the Citus functions sql/citus/distribute.sql calls, for a
-- scratch database on plain PostgreSQL (tests/py/test_distribution.py).  They
-- record each call in pg_dist_partition / pg_dist_object (in public, found
-- where Citus keeps its own in pg_catalog) and refuse what Citus 13 refuses,
-- with its messages: a distributed table whose primary key, unique constraint
-- or foreign key lacks the distribution column, a foreign key to a table
-- that is neither co-located nor a reference table, ON DELETE SET NULL/SET
-- DEFAULT on the distribution column, a policy with a subquery, triggers
-- without citus.enable_unsafe_triggers, an identity column other than bigint.
-- What they cannot show: how Citus plans and runs queries on the shards.

create table public.pg_dist_partition (
    logicalrelid regclass primary key,
    partmethod text not null,
    partkey text,
    colocationid integer not null,
    repmodel text not null
);

create table public.pg_dist_object (
    classid oid not null,
    objid oid not null,
    objsubid integer not null default 0,
    primary key (classid, objid, objsubid)
);

create sequence public.citus_stub_colocation_ids;

-- The refusals a table meets whatever its kind (distributed, reference, local in metadata).
create function public.citus_stub_common_refusals(relation regclass)
returns void
language plpgsql
as $$
declare
    found_name text;
begin
    if exists (select from public.pg_dist_partition as p where p.logicalrelid = relation) then
        raise exception 'table "%" is already distributed', relation;
    end if;
    if exists (select from pg_trigger as t where t.tgrelid = relation and not t.tgisinternal)
        and current_setting('citus.enable_unsafe_triggers', true) is distinct from 'on' then
        raise exception 'cannot distribute relation "%" because it has triggers', relation;
    end if;
    select p.polname into found_name
    from pg_policy as p
    where
        p.polrelid = relation
        and concat(pg_get_expr(p.polqual, p.polrelid), ' ', pg_get_expr(p.polwithcheck, p.polrelid)) ~* '\mselect\M';
    if found_name is not null then
        raise exception 'cannot create policy % on %', found_name, relation
        using detail = 'Subqueries are not supported in policies on distributed tables';
    end if;
    select a.attname into found_name
    from pg_attribute as a
    where a.attrelid = relation and a.attidentity <> '' and a.atttypid <> 'bigint'::regtype and not a.attisdropped;
    if found_name is not null then
        raise exception 'cannot complete operation on % with smallint/int identity column %', relation, found_name;
    end if;
end
$$;

-- Foreign keys from a table: to a reference table always; to a distributed
-- table only when co-located and on the distribution column, position for position.
create function public.citus_stub_check_foreign_keys(relation regclass, distribution_column text)
returns void
language plpgsql
as $$
declare
    fk record;
    target public.pg_dist_partition;
    own public.pg_dist_partition;
    own_position integer;
    target_position integer;
begin
    select p.* into own from public.pg_dist_partition as p where p.logicalrelid = relation;
    for fk in
        select c.conname, c.confrelid::regclass as target_relation, c.conkey, c.confkey, c.confdeltype, c.confupdtype
        from pg_constraint as c
        where c.conrelid = relation and c.contype = 'f'
    loop
        select p.* into target from public.pg_dist_partition as p where p.logicalrelid = fk.target_relation;
        if target.logicalrelid is null then
            raise exception 'cannot create foreign key constraint %', fk.conname
            using detail = format(
                'referenced table "%s" must be a distributed table or a reference table', fk.target_relation
            );
        end if;
        if target.partmethod = 'n' then
            if own.partmethod = 'n' and own.repmodel = 't' and target.repmodel <> 't' then
                raise exception 'cannot create foreign key constraint %', fk.conname
                using detail = 'a reference table can only reference reference tables';
            end if;
            continue;
        end if;
        own_position := array_position(
            fk.conkey, (select a.attnum from pg_attribute as a where a.attrelid = relation and a.attname = distribution_column)
        );
        target_position := array_position(
            fk.confkey,
            (
                select a.attnum from pg_attribute as a
                where a.attrelid = fk.target_relation and a.attname = target.partkey
            )
        );
        if own.partmethod is distinct from 'h' or own.colocationid <> target.colocationid
            or own_position is null or own_position is distinct from target_position then
            raise exception 'cannot create foreign key constraint %', fk.conname
            using detail = 'Foreign keys are supported in two cases, either in between two colocated tables including '
            || 'partition column in the same ordinal in the both tables or from distributed to reference tables';
        end if;
        if fk.confdeltype in ('n', 'd') then
            raise exception 'cannot create foreign key constraint %', fk.conname
            using detail = 'SET NULL or SET DEFAULT is not supported in ON DELETE operation when distribution key '
            || 'is included in the foreign key constraint';
        end if;
        if fk.confupdtype in ('n', 'd', 'c') then
            raise exception 'cannot create foreign key constraint %', fk.conname
            using detail = 'SET NULL, SET DEFAULT or CASCADE is not supported in ON UPDATE operation when '
            || 'distribution key included in the foreign constraint';
        end if;
    end loop;
end
$$;

create function public.create_distributed_table(
    table_name regclass,
    distribution_column text,
    distribution_type text default 'hash',
    colocate_with text default 'default',
    shard_count integer default null
)
returns void
language plpgsql
as $$
declare
    column_type regtype;
    group_id integer;
    unique_name text;
begin
    perform public.citus_stub_common_refusals(table_name);
    select a.atttypid::regtype into column_type
    from pg_attribute as a where a.attrelid = table_name and a.attname = distribution_column and not a.attisdropped;
    if column_type is null then
        raise exception 'column "%" of relation "%" does not exist', distribution_column, table_name;
    end if;
    select i.indexrelid::regclass::text into unique_name
    from pg_index as i
    where
        i.indrelid = table_name
        and i.indisunique
        and not (
            (select a.attnum from pg_attribute as a where a.attrelid = table_name and a.attname = distribution_column)
            = any(i.indkey::smallint [])
        );
    if unique_name is not null then
        raise exception 'cannot create constraint on "%"', table_name
        using detail = 'Distributed relations cannot have UNIQUE, EXCLUDE, or PRIMARY KEY constraints that do not '
        || format('include the partition column (%s)', unique_name);
    end if;
    if colocate_with = 'none' or colocate_with = 'default' then
        group_id := nextval('public.citus_stub_colocation_ids');
    else
        select p.colocationid into group_id from public.pg_dist_partition as p
        where p.logicalrelid = colocate_with::regclass and p.partmethod = 'h';
        if group_id is null then
            raise exception 'cannot colocate tables % and %', table_name, colocate_with
            using detail = format('relation "%s" is not distributed', colocate_with);
        end if;
        if (
            select a.atttypid from pg_attribute as a, public.pg_dist_partition as p
            where p.logicalrelid = colocate_with::regclass and a.attrelid = p.logicalrelid and a.attname = p.partkey
        ) <> column_type then
            raise exception 'cannot colocate tables % and %', table_name, colocate_with
            using detail = 'Distribution column types don''t match';
        end if;
    end if;
    insert into public.pg_dist_partition (logicalrelid, partmethod, partkey, colocationid, repmodel)
    values (table_name, 'h', distribution_column, group_id, 's');
    perform public.citus_stub_check_foreign_keys(table_name, distribution_column);
end
$$;

create function public.create_reference_table(table_name regclass)
returns void
language plpgsql
as $$
begin
    perform public.citus_stub_common_refusals(table_name);
    insert into public.pg_dist_partition (logicalrelid, partmethod, partkey, colocationid, repmodel)
    values (table_name, 'n', null, 0, 't');
    perform public.citus_stub_check_foreign_keys(table_name, null);
end
$$;

create function public.citus_add_local_table_to_metadata(
    table_name regclass, cascade_via_foreign_keys boolean default false
)
returns void
language plpgsql
as $$
begin
    if exists (select from public.pg_dist_partition as p where p.logicalrelid = table_name) then
        raise exception 'table "%" is already distributed', table_name;
    end if;
    insert into public.pg_dist_partition (logicalrelid, partmethod, partkey, colocationid, repmodel)
    values (table_name, 'n', null, 0, 's');
    perform public.citus_stub_check_foreign_keys(table_name, null);
end
$$;

create function public.create_distributed_function(
    function_name regprocedure,
    distribution_arg_name text default null,
    colocate_with text default 'default',
    force_delegation boolean default null
)
returns void
language sql
as $$
    insert into public.pg_dist_object (classid, objid) values ('pg_proc'::regclass, function_name)
$$;
